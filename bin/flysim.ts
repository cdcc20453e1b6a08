/**
 * flysim: run the local Fly (Machines API, OIDC issuer, machines as local
 * processes) in the foreground, for fly-vault-admin and fly-vault to use.
 */
import { Command, CommanderError } from "commander";
import { commanderExit, ourUsageErrors } from "../src/errors/cli.ts";
import { formatError } from "../src/errors/mod.ts";
import { startFlysim } from "../src/flysim/mod.ts";

const program = new Command("flysim")
  .description(
    "Run a local stand-in for Fly.io: the Machines API (machines run the real fly-vault-init as " +
      "local processes, volumes are directories), the org's OIDC issuer, and each machine's token socket.",
  )
  .option("--state <dir>", "where volumes and sockets live", "./.state/flysim")
  .option("--port <n>", "Machines API port on 127.0.0.1 (0 = any)", "4280")
  .option("--token <token>", "the API token clients must send", "flysim-token")
  .option("--org <slug>", "the org slug (the issuer is <issuer>/<org>)", "personal")
  .option("--logs", "print each machine's init log lines")
  .addHelpText(
    "after",
    `
Then, in another terminal:
  export FLY_API_BASE=http://127.0.0.1:4280 FLY_API_TOKEN=flysim-token FLY_APP=vault-tenants
  npx fly-vault-admin tenant create acme --template examples/tenant.template.toml --access-token "$(openssl rand -base64 32)"
  npx fly-vault-admin tenant list --wide
and point a [vault.NAME] at a machine's address with oidc_issuer = <printed issuer>,
local_simulation = true.`,
  );
ourUsageErrors(program);
try {
  program.parse();
} catch (err) {
  Deno.exit(err instanceof CommanderError ? commanderExit(err, program, Deno.args) : 1);
}
const flags = program.opts<
  { state: string; port: string; token: string; org: string; logs?: boolean }
>();

try {
  await Deno.mkdir(flags.state, { recursive: true });
  const sim = await startFlysim({
    stateDir: flags.state,
    apiToken: flags.token,
    org: flags.org,
    apiPort: Number(flags.port),
    echoLogs: flags.logs,
  });
  console.log(`flysim: Machines API   ${sim.api.baseUrl}`);
  console.log(`flysim: OIDC issuer    ${sim.issuer.baseUrl}/${sim.org}`);
  console.log(`flysim: state          ${flags.state}`);
  console.log(`\n  export FLY_API_BASE=${sim.api.baseUrl}`);
  console.log(`  # and FLY_API_TOKEN: the --token value (flysim-token unless you chose one)`);
  console.log(`  # in config.toml: oidc_issuer = "${sim.issuer.baseUrl}", local_simulation = true`);
  await new Promise<void>((resolve) => {
    for (const s of ["SIGINT", "SIGTERM"] as const) Deno.addSignalListener(s, resolve);
  });
  await sim.close();
} catch (err) {
  console.error(formatError(err));
  Deno.exit(1);
}
Deno.exit(0);
