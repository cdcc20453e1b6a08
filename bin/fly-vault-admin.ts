/**
 * fly-vault-admin: manages tenant machines through the Fly Machines API.
 * Parses flags and calls src/admin; nothing else.
 */
import { Command, CommanderError } from "commander";
import { formatError } from "../src/errors/mod.ts";
import { commanderExit, ourUsageErrors } from "../src/errors/cli.ts";
import {
  type ConnectionFlags,
  createCommand,
  deleteCommand,
  exitCodeFor,
  listCommand,
  updateImageCommand,
  usageFactsCommand,
} from "../src/admin/mod.ts";

const collect = (value: string, previous: string[] = []) => [...previous, value];

const program = new Command("fly-vault-admin")
  .description("Create, list, meter, update and delete fly-vault tenants (Fly Machines API).")
  .option("--api-token <token>", "Fly API token (or FLY_API_TOKEN); required")
  .option("--app <app>", "Fly app holding tenant machines (or FLY_APP); required")
  .option(
    "--api-base <url>",
    "Machines API base (or FLY_API_BASE; default https://api.machines.dev)",
  )
  .option("-v, --verbose", "print each API step and retry on stderr")
  .option(
    "--deadline <seconds>",
    "give up on an API call (retries included) after this long (default 120)",
    (v: string) => {
      const n = Number(v);
      if (!(n > 0)) throw new CommanderError(2, "usage", `--deadline ${v} is not seconds`);
      return n;
    },
  )
  .exitOverride()
  .addHelpText(
    "after",
    `
Examples:
  fly-vault-admin tenant create acme --template ./tenant.template.toml --access-token "$(openssl rand -base64 32)" --org my-org
  fly-vault-admin tenant create acme --template ./tenant.template.toml --dry-run
  fly-vault-admin tenant list --wide
  fly-vault-admin tenant usage-facts --tenant acme
  fly-vault-admin tenant usage-facts --listen 127.0.0.1:18083 --bearer-token secret
  fly-vault-admin tenant delete acme --yes
  fly-vault-admin tenant update-image --image registry.fly.io/vault-tenants/init:latest --all-tenants

Template variables: {{tenant_id}}, {{index}} (1-based), {{access_token}} (with --access-token),
and --var key=value. Tenants are found by machine metadata fly_vault_tenant / fly_vault_index.
Exit status: 0 ok; 1 the operation failed (API error, update stopped); 2 bad usage
(missing flag or env, bad template, delete without --yes).`,
  );
// Before the subcommands: they inherit it (commander's errors in our style, --version).
ourUsageErrors(program);

const globals = () => program.opts<ConnectionFlags>();
let status = 0;
const run = (fn: () => Promise<number>) => async () => {
  status = await fn();
};

const tenant = program.command("tenant").description("manage tenants");

tenant.command("create <id>")
  .description("create a tenant's volumes and machines (re-run completes a partial create)")
  .requiredOption("--template <file>", "tenant template (TOML)")
  .option("--access-token <token>", "value of {{access_token}} (at least 32 characters)")
  .option("--var <key=value>", "template variable (repeatable)", collect, [])
  .option("--dry-run", "print the rendered API requests as JSON; call nothing")
  .option("--json", "print the result as JSON")
  .option("--org <slug>", "Fly org slug, for the client config printed (or FLY_ORG)")
  .option("--proxy <host:port>", "vault-proxy's address users dial (or FLY_VAULT_PROXY)")
  .action((id: string, o) => run(() => createCommand(id, { ...globals(), ...o }))());

tenant.command("list")
  .description("list tenants and their machines")
  .option("--wide", "one row per machine")
  .option("--json", "JSON for scripts")
  .action((o) => run(() => listCommand({ ...globals(), ...o }))());

tenant.command("usage-facts")
  .description("machine usage facts as a flat JSON array (or serve them over HTTP)")
  .option("--tenant <id>", "only this tenant")
  .option("--listen <addr>", "serve GET /usage-facts and GET /healthz on HOST:PORT")
  .option(
    "--bearer-token <token>",
    "require Authorization: Bearer TOKEN (or FLY_VAULT_USAGE_BEARER_TOKEN)",
  )
  .action((o) => run(() => usageFactsCommand({ ...globals(), ...o }))());

tenant.command("delete <id>")
  .description("stop and destroy a tenant's machines, then delete their volumes")
  .option("--yes", "really delete (data on the volumes is lost)")
  .option("--template <file>", "also delete never-attached volumes the template names")
  .option("--var <key=value>", "template variable (repeatable)", collect, [])
  .option("--json", "print the result as JSON")
  .action((id: string, o) => run(() => deleteCommand(id, { ...globals(), ...o }))());

tenant.command("update-image")
  .description("move machines to a new image, one at a time, stopping at the first failure")
  .requiredOption("--image <ref>", "image reference")
  .option("--tenant <id>", "only this tenant")
  .option("--all-tenants", "every tenant")
  .option("--dry-run", "list what would be updated")
  .option("--json", "print the summary as JSON")
  .action((o) => run(() => updateImageCommand({ ...globals(), ...o }))());

try {
  await program.parseAsync(Deno.args, { from: "user" });
} catch (err) {
  if (err instanceof CommanderError) Deno.exit(commanderExit(err, program, Deno.args));
  console.error(formatError(err));
  Deno.exit(exitCodeFor(err));
}
Deno.exit(status);
