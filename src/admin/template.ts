/**
 * Tenant templates: the TOML of the README with `{{tenant_id}}`,
 * `{{index}}` (1-based), `{{access_token}}` and `--var` values substituted
 * into string values after parsing, so a value can never change the TOML's
 * structure. Variables are checked against the raw text first, so an unknown
 * or unset one is reported with its line.
 *
 * @module
 */
import { parse, TomlError } from "smol-toml";
import { z } from "zod";
import { VaultError } from "../errors/mod.ts";
import type { CreateMachineRequest, CreateVolumeRequest } from "./schemas.ts";

/** Metadata key holding the tenant id: how every command finds a tenant's machines. */
export const TENANT_KEY = "fly_vault_tenant";
/** Metadata key holding the machine's 1-based index within its tenant. */
export const INDEX_KEY = "fly_vault_index";

const TENANT_ID = /^[a-z0-9](?:[a-z0-9_-]{0,61}[a-z0-9])?$/;
const VAR_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
// Fly: "Volume name must consist of only letters, numbers and underscores, max 30 characters".
const VOLUME_NAME = /^[A-Za-z0-9_]{1,30}$/;
const PLACEHOLDER = /\{\{\s*([^{}]*?)\s*\}\}/g;
const BUILTINS = ["tenant_id", "index", "access_token"];

/** Throws unless `id` is a usable tenant id. */
export function checkTenantId(id: string): void {
  if (!TENANT_ID.test(id)) {
    throw new VaultError(
      "admin.bad_tenant_id",
      `tenant id ${JSON.stringify(id)} is not valid`,
      "use lowercase letters, digits, - and _ (1-63 characters, starting and ending with a letter or digit)",
    );
  }
}

/** Parses repeated `--var key=value` flags. */
export function parseVars(pairs: string[]): Record<string, string> {
  const vars: Record<string, string> = {};
  for (const pair of pairs) {
    const eq = pair.indexOf("=");
    const key = eq < 0 ? pair : pair.slice(0, eq);
    if (eq < 0 || !VAR_NAME.test(key)) {
      throw new VaultError(
        "admin.bad_var",
        `--var ${JSON.stringify(pair)} is not key=value`,
        "write --var name=value (name: letters, digits, _)",
      );
    }
    if (BUILTINS.includes(key)) {
      throw new VaultError(
        "admin.bad_var",
        `--var ${key} would replace a built-in variable`,
        key === "access_token" ? "use --access-token" : `{{${key}}} is set by the admin`,
      );
    }
    vars[key] = pair.slice(eq + 1);
  }
  return vars;
}

const MountSchema = z.object({
  path: z.string().startsWith("/"),
  name: z.string().min(1),
  size_gb: z.number().int().min(1).max(500).default(1),
  encrypted: z.boolean().optional(),
}).strict();

const TemplateSchema = z.object({
  version: z.literal(1),
  app: z.string().optional(),
  machine_count: z.number().int().min(1).max(1000).default(1),
  machine: z.object({
    name: z.string().min(1),
    region: z.string().min(1),
    config: z.looseObject({
      image: z.string().min(1),
      env: z.record(z.string(), z.string()).optional(),
      metadata: z.record(z.string(), z.string()).optional(),
      mounts: z.array(MountSchema).max(1, "Fly mounts at most one volume per machine").optional(),
    }),
  }).strict(),
}).strict();

/** Values the template may use. */
export interface TemplateInput {
  tenantId: string;
  accessToken?: string;
  vars?: Record<string, string>;
}

/** One volume a machine mounts, as it will be created. */
export interface PlannedVolume {
  request: CreateVolumeRequest;
  path: string;
}

/** One machine of a tenant, rendered. */
export interface PlannedMachine {
  index: number;
  /** The create request, mounts without their volume ids (known once the volumes exist). */
  request: CreateMachineRequest;
  volumes: PlannedVolume[];
}

/** A rendered template. */
export interface TenantPlan {
  tenantId: string;
  app: string | undefined;
  machineCount: number;
  machines: PlannedMachine[];
}

function fail(message: string, hint: string): never {
  throw new VaultError("admin.template", message, hint);
}

/** Renders a template's text for a tenant. `source` names the file in errors. */
export function renderTemplate(
  text: string,
  input: TemplateInput,
  source = "template",
): TenantPlan {
  checkTenantId(input.tenantId);
  const vars = input.vars ?? {};
  // Check every placeholder against the raw text, where lines are known.
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    // A commented-out line uses nothing (the README's template is often edited that way).
    if (lines[i].trimStart().startsWith("#")) continue;
    for (const match of lines[i].matchAll(PLACEHOLDER)) {
      const name = match[1];
      if (name === "tenant_id" || name === "index" || Object.hasOwn(vars, name)) continue;
      if (name === "access_token") {
        if (input.accessToken !== undefined) continue;
        fail(
          `${source} line ${i + 1} uses {{access_token}} but no access token was given`,
          "pass --access-token TOKEN",
        );
      }
      fail(
        `${source} line ${i + 1}: unknown variable {{${name}}}`,
        `known: tenant_id, index, access_token${
          Object.keys(vars).map((k) => `, ${k}`).join("")
        }; pass --var ${name}=VALUE`,
      );
    }
  }
  let raw: unknown;
  try {
    raw = parse(text);
  } catch (err) {
    if (err instanceof TomlError) {
      fail(`${source} line ${err.line}: ${err.message.split("\n")[0]}`, "fix the TOML syntax");
    }
    throw err;
  }
  const parsed = TemplateSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    fail(
      `${source}: ${issue.path.join(".") || "(top level)"}: ${issue.message}`,
      "see the template in the README (version, app, machine_count, [machine], [machine.config])",
    );
  }
  const t = parsed.data;
  const machines: PlannedMachine[] = [];
  const seenNames = new Set<string>();
  const seenVolumes = new Set<string>();
  for (let index = 1; index <= t.machine_count; index++) {
    const values: Record<string, string> = {
      ...vars,
      tenant_id: input.tenantId,
      index: String(index),
      ...(input.accessToken !== undefined ? { access_token: input.accessToken } : {}),
    };
    const m = substitute(t.machine, values) as typeof t.machine;
    const { mounts, metadata, ...config } = m.config;
    for (const key of [TENANT_KEY, INDEX_KEY]) {
      if (metadata && key in metadata) {
        fail(`${source}: machine.config.metadata.${key} is set by the admin`, `remove ${key}`);
      }
    }
    if (seenNames.has(m.name)) {
      fail(
        `${source}: machine name ${JSON.stringify(m.name)} repeats for index ${index}`,
        "put {{index}} in machine.name when machine_count > 1",
      );
    }
    seenNames.add(m.name);
    const volumes: PlannedVolume[] = (mounts ?? []).map((mount) => {
      if (!VOLUME_NAME.test(mount.name)) {
        fail(
          `${source}: volume name ${JSON.stringify(mount.name)} is not valid on Fly`,
          "volume names allow letters, digits and _ only, at most 30 characters",
        );
      }
      if (seenVolumes.has(mount.name)) {
        fail(
          `${source}: volume name ${JSON.stringify(mount.name)} repeats for index ${index}`,
          "put {{index}} in the mount name when machine_count > 1",
        );
      }
      seenVolumes.add(mount.name);
      return {
        path: mount.path,
        request: {
          name: mount.name,
          region: m.region,
          size_gb: mount.size_gb,
          ...(mount.encrypted !== undefined ? { encrypted: mount.encrypted } : {}),
        },
      };
    });
    machines.push({
      index,
      volumes,
      request: {
        name: m.name,
        region: m.region,
        config: {
          ...config,
          metadata: { ...metadata, [TENANT_KEY]: input.tenantId, [INDEX_KEY]: String(index) },
        },
      },
    });
  }
  return { tenantId: input.tenantId, app: t.app, machineCount: t.machine_count, machines };
}

/** The create request for a machine once its volumes exist. */
export function machineRequest(
  planned: PlannedMachine,
  volumeIds: string[],
): CreateMachineRequest {
  const mounts = planned.volumes.map((v, i) => ({
    volume: volumeIds[i],
    path: v.path,
    name: v.request.name,
    size_gb: v.request.size_gb,
  }));
  return {
    ...planned.request,
    config: { ...planned.request.config, ...(mounts.length ? { mounts } : {}) },
  };
}

function substitute(value: unknown, values: Record<string, string>): unknown {
  if (typeof value === "string") {
    return value.replace(PLACEHOLDER, (_, name: string) => values[name]);
  }
  if (Array.isArray(value)) return value.map((v) => substitute(v, values));
  if (value && typeof value === "object" && !(value instanceof Date)) {
    return Object.fromEntries(
      Object.entries(value).map(([k, v]) => [k, substitute(v, values)]),
    );
  }
  return value;
}

/**
 * The shortest access token `tenant create` accepts. An online guesser gets
 * at most thousands of tries a second (init answers a right token at once,
 * so the handshake is what bounds it): 10⁴/s for a century is under 2⁴⁵
 * guesses. 32 random base64 characters are 192 bits (`openssl rand -base64 32` gives 44)
 * and keeps a hand-made token far out of reach even at 2–3 bits a character
 * of human-chosen text; it is also the 256-bit floor common for shared secrets.
 */
export const MIN_ACCESS_TOKEN_LENGTH = 32;

/**
 * Refuses a plan whose machines would get an access token shorter than
 * {@link MIN_ACCESS_TOKEN_LENGTH} (`env.ACCESS_TOKEN`, whether from
 * `--access-token`, a `--var` or written in the template). `placeholder`
 * (the dry run's stand-in) is not a token and is not checked.
 */
export function checkAccessTokens(
  plan: TenantPlan,
  accessToken: string | undefined,
  placeholder?: string,
): void {
  const hint =
    `make one with \`openssl rand -base64 32\` (44 characters, 256 random bits): whoever guesses it is root in the vault`;
  if (accessToken !== undefined && accessToken !== placeholder) {
    if ([...accessToken].length < MIN_ACCESS_TOKEN_LENGTH) {
      throw new VaultError(
        "admin.weak_access_token",
        `--access-token has ${
          [...accessToken].length
        } characters; at least ${MIN_ACCESS_TOKEN_LENGTH} are required`,
        hint,
      );
    }
  }
  for (const m of plan.machines) {
    const token = m.request.config.env?.ACCESS_TOKEN;
    if (token === undefined || token === placeholder || token.includes(placeholder ?? "\0")) {
      continue;
    }
    const n = [...token].length;
    if (n < MIN_ACCESS_TOKEN_LENGTH) {
      throw new VaultError(
        "admin.weak_access_token",
        `machine #${m.index}'s ACCESS_TOKEN (from the template${
          accessToken !== undefined && token.includes(accessToken) ? " and --access-token" : ""
        }) has ${n} characters; at least ${MIN_ACCESS_TOKEN_LENGTH} are required`,
        hint,
      );
    }
  }
}
