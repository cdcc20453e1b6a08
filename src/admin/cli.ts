/**
 * What the fly-vault-admin commands do once flags are parsed: resolve the
 * connection, run the tenant operation, print for people or scripts.
 *
 * @module
 */
import { VaultError } from "../errors/mod.ts";
import { createFlyClient, DEFAULT_API_BASE, type FlyClient } from "./client.ts";
import { checkAccessTokens, machineRequest, parseVars, renderTemplate } from "./template.ts";
import {
  clientVaults,
  createTenant,
  deleteTenant,
  formatClientConfig,
  formatTenantTable,
  listTenants,
  updateImage,
  usageFacts,
} from "./tenant.ts";
import { parseListen, serveUsageFacts } from "./serve.ts";

/** Success. */
export const EXIT_OK = 0;
/** The operation failed (API error, partial update...). */
export const EXIT_FAILURE = 1;
/** Bad usage: a missing flag, a bad template, no --yes. */
export const EXIT_USAGE = 2;

/** Connection flags shared by every command. */
export interface ConnectionFlags {
  apiToken?: string;
  app?: string;
  apiBase?: string;
  verbose?: boolean;
  /** Seconds one API call may take, retries included (default 120). */
  deadline?: number;
}

/** Flags, then environment, then defaults; names the first missing required value. */
export function resolveConnection(
  flags: ConnectionFlags,
  env: (name: string) => string | undefined = (n) => Deno.env.get(n),
  need: { token?: boolean } = {},
): { token: string; app: string; apiBase: string } {
  const token = flags.apiToken || env("FLY_API_TOKEN") || "";
  const app = flags.app || env("FLY_APP") || "";
  const apiBase = flags.apiBase || env("FLY_API_BASE") || DEFAULT_API_BASE;
  if (need.token !== false && !token) {
    throw new VaultError(
      "admin.missing_api_token",
      "no API token: --api-token or FLY_API_TOKEN is required",
      "create one with `fly tokens deploy -a APP` and set FLY_API_TOKEN",
    );
  }
  if (!app) {
    throw new VaultError(
      "admin.missing_app",
      "no app: --app or FLY_APP is required",
      "name the Fly app holding the tenant machines, e.g. --app vault-tenants",
    );
  }
  if (!/^https?:\/\/[^/]+/.test(apiBase)) {
    throw new VaultError(
      "admin.bad_api_base",
      `--api-base ${JSON.stringify(apiBase)} is not an http(s) URL`,
      `the default is ${DEFAULT_API_BASE}`,
    );
  }
  return { token, app, apiBase };
}

function clientFor(flags: ConnectionFlags): FlyClient {
  const c = resolveConnection(flags);
  return createFlyClient({
    apiBase: c.apiBase,
    token: c.token,
    app: c.app,
    ...(flags.deadline ? { deadlineMs: flags.deadline * 1000 } : {}),
    onRetry: flags.verbose
      ? (r) => console.error(`retry ${r.attempt} in ${r.delayMs} ms: ${r.reason}`)
      : undefined,
  });
}

const log = (flags: ConnectionFlags) => (line: string) => {
  if (flags.verbose) console.error(line);
};

function print(value: unknown) {
  console.log(JSON.stringify(value, null, 2));
}

const REDACTED = "<redacted>";

/** Replaces every occurrence of `secret` in string values. */
function redact(value: unknown, secret: string | undefined): unknown {
  if (!secret) return value;
  if (typeof value === "string") return value.split(secret).join(REDACTED);
  if (Array.isArray(value)) return value.map((v) => redact(v, secret));
  if (value && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, redact(v, secret)]));
  }
  return value;
}

async function readTemplate(path: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (err) {
    throw new VaultError(
      "admin.template_unreadable",
      `cannot read template ${path}: ${(err as Error).message}`,
      "pass --template PATH to a tenant template (see README)",
    );
  }
}

/** `tenant create`. */
export async function createCommand(
  tenant: string,
  o: ConnectionFlags & {
    template: string;
    accessToken?: string;
    var?: string[];
    dryRun?: boolean;
    json?: boolean;
    /** The Fly org slug, for the client tables printed after a create. */
    org?: string;
    /** vault-proxy's public address, for the client tables (else each machine's 6PN). */
    proxy?: string;
  },
): Promise<number> {
  const text = await readTemplate(o.template);
  // A dry run shows {{access_token}} as <redacted> either way, so it needs no token (README).
  const accessToken = o.accessToken ?? (o.dryRun ? REDACTED : undefined);
  const plan = renderTemplate(
    text,
    { tenantId: tenant, accessToken, vars: parseVars(o.var ?? []) },
    o.template,
  );
  // Wherever the token comes from (--access-token, a --var, the template itself).
  checkAccessTokens(plan, o.accessToken, REDACTED);
  if (o.dryRun) {
    const app = o.app || Deno.env.get("FLY_APP") || plan.app;
    if (!app) resolveConnection(o, undefined, { token: false });
    const base = `/v1/apps/${app}`;
    const requests = plan.machines.flatMap((m) => [
      ...m.volumes.map((v) => ({ method: "POST", path: `${base}/volumes`, body: v.request })),
      {
        method: "POST",
        path: `${base}/machines`,
        body: machineRequest(m, m.volumes.map((v) => `<id of volume ${v.request.name}>`)),
      },
    ]);
    print(redact({ tenant, app, machine_count: plan.machineCount, requests }, o.accessToken));
    return EXIT_OK;
  }
  const client = clientFor(o);
  const result = await createTenant(client, plan, { log: log(o) });
  const where = {
    app: client.app,
    org: o.org || Deno.env.get("FLY_ORG") || undefined,
    proxy: o.proxy || Deno.env.get("FLY_VAULT_PROXY") || undefined,
  };
  if (o.json) {
    print({ ...result, vaults: clientVaults(result, where) });
  } else {
    const made = result.machines.filter((m) => m.created).length;
    console.log(
      `tenant ${tenant}: ${result.machines.length} machine(s), ${made} created, ${
        result.machines.length - made
      } already there; ${result.volumesCreated.length} volume(s) created`,
    );
    for (const m of result.machines) console.log(`  #${m.index} ${m.id} ${m.name} ${m.state}`);
    console.log(
      `\nfor each user's ~/.config/fly-vault/config.toml (hand the access token over separately):\n`,
    );
    console.log(formatClientConfig(result, where));
  }
  return EXIT_OK;
}

/** `tenant list`. */
export async function listCommand(o: ConnectionFlags & { wide?: boolean; json?: boolean }) {
  const tenants = await listTenants(clientFor(o));
  if (o.json) print(tenants);
  else console.log(formatTenantTable(tenants, !!o.wide));
  return EXIT_OK;
}

/** `tenant usage-facts`, once or as a server. */
export async function usageFactsCommand(
  o: ConnectionFlags & { tenant?: string; listen?: string; bearerToken?: string },
): Promise<number> {
  const client = clientFor(o);
  if (!o.listen) {
    print(await usageFacts(client, o.tenant));
    return EXIT_OK;
  }
  const { hostname, port } = parseListen(o.listen);
  const bearerToken = o.bearerToken ?? Deno.env.get("FLY_VAULT_USAGE_BEARER_TOKEN");
  const server = await serveUsageFacts({
    hostname,
    port,
    bearerToken,
    facts: () => usageFacts(client, o.tenant),
    log: (l) => console.error(l),
  });
  if (!bearerToken && !["127.0.0.1", "::1", "localhost"].includes(hostname)) {
    console.error("warning: serving usage facts without --bearer-token on a non-loopback address");
  }
  console.log(`listening on ${server.url} (GET /usage-facts, GET /healthz)`);
  const stop = () => {
    console.error("shutting down");
    server.shutdown();
  };
  Deno.addSignalListener("SIGTERM", stop);
  Deno.addSignalListener("SIGINT", stop);
  await server.finished;
  Deno.removeSignalListener("SIGTERM", stop);
  Deno.removeSignalListener("SIGINT", stop);
  return EXIT_OK;
}

/** `tenant delete`. */
export async function deleteCommand(
  tenant: string,
  o: ConnectionFlags & { yes?: boolean; json?: boolean; template?: string; var?: string[] },
): Promise<number> {
  if (!o.yes) {
    throw new VaultError(
      "admin.confirm",
      `refusing to delete tenant ${tenant} without --yes`,
      "this destroys its machines and their volumes (data included); add --yes",
    );
  }
  let volumeNames: string[] | undefined;
  if (o.template) {
    // Only the volume names are used; the access token's value does not matter here.
    const plan = renderTemplate(
      await readTemplate(o.template),
      { tenantId: tenant, accessToken: REDACTED, vars: parseVars(o.var ?? []) },
      o.template,
    );
    volumeNames = plan.machines.flatMap((m) => m.volumes.map((v) => v.request.name));
  }
  const result = await deleteTenant(clientFor(o), tenant, { log: log(o), volumeNames });
  if (o.json) print(result);
  else {
    console.log(
      `tenant ${tenant}: ${result.machinesDestroyed.length} machine(s) destroyed, ${result.volumesDeleted.length} volume(s) deleted`,
    );
  }
  return EXIT_OK;
}

/** `tenant update-image`. */
export async function updateImageCommand(
  o: ConnectionFlags & {
    image: string;
    tenant?: string;
    allTenants?: boolean;
    dryRun?: boolean;
    json?: boolean;
  },
): Promise<number> {
  if (!!o.tenant === !!o.allTenants) {
    throw new VaultError(
      "admin.usage",
      "update-image needs exactly one of --tenant ID or --all-tenants",
      "e.g. tenant update-image --image REF --tenant acme",
    );
  }
  const s = await updateImage(clientFor(o), {
    image: o.image,
    tenant: o.tenant,
    dryRun: o.dryRun,
    log: (l) => console.error(l),
  });
  if (o.json) print(s);
  else {
    const verb = s.dry_run ? "would update" : "not attempted";
    console.log(`updated ${s.updated.length}: ${s.updated.join(" ") || "-"}`);
    console.log(`already on ${s.image} ${s.unchanged.length}: ${s.unchanged.join(" ") || "-"}`);
    if (s.failed) console.log(`FAILED ${s.failed.machine}: ${s.failed.error}`);
    console.log(`${verb} ${s.not_attempted.length}: ${s.not_attempted.join(" ") || "-"}`);
  }
  if (s.failed) {
    throw new VaultError(
      "admin.update_failed",
      `update stopped at ${s.failed.machine}: ${s.failed.error}`,
      `${s.updated.length} updated, ${s.not_attempted.length} not attempted; fix and re-run (updated machines are skipped)`,
    );
  }
  return EXIT_OK;
}

const USAGE_CODES = [
  "admin.missing_api_token",
  "admin.missing_app",
  "admin.bad_api_base",
  "admin.bad_tenant_id",
  "admin.bad_var",
  "admin.bad_listen",
  "admin.template",
  "admin.weak_access_token",
  "admin.template_unreadable",
  "admin.app_mismatch",
  "admin.confirm",
  "admin.usage",
];

/** The exit status for an error: 2 for usage mistakes, 1 for failures. */
export function exitCodeFor(err: unknown): number {
  return err instanceof VaultError && USAGE_CODES.includes(err.code) ? EXIT_USAGE : EXIT_FAILURE;
}
