/**
 * fly-vault-init: the tenant machine's entrypoint (Fly's init runs it as root
 * with the tenant volume at /data).
 */
import { Command, CommanderError } from "commander";
import { commanderExit, ourUsageErrors } from "../src/errors/cli.ts";
import { formatError } from "../src/errors/mod.ts";
import { createFlyTokenSource } from "../src/attest/mod.ts";
import { initConfigFromEnv, runInit } from "../src/init/mod.ts";

const program = new Command("fly-vault-init")
  .description(
    "Serve a fly-vault tenant machine: attestation, authentication, exec, console, forwards,\n" +
      "provisioning. Runs as the Fly Machine's entrypoint; every setting also has an env var.",
  )
  .option("--listen <addr>", "UDP address to serve QUIC on (env FLY_VAULT_LISTEN)", undefined)
  .option("--data <dir>", "the tenant volume (env FLY_VAULT_DATA)", undefined)
  .option("--token-socket <path>", "Fly's API socket (env FLY_VAULT_TOKEN_SOCKET)", undefined)
  .addHelpText(
    "after",
    "\nEnvironment:\n  ACCESS_TOKEN        the tenant's access token (required; removed from the env at start)\n" +
      "  FLY_MACHINE_ID      set by Fly; names this machine in its TLS certificate\n" +
      "  FLY_VAULT_IDLE_SUSPEND  no client connected this long: suspend this machine through\n" +
      "                      Fly's API socket (default 15m; 90s, 2h…; off never)\n",
  );
ourUsageErrors(program);
try {
  program.parse();
} catch (err) {
  Deno.exit(err instanceof CommanderError ? commanderExit(err, program, Deno.args) : 1);
}
const flags = program.opts<{ listen?: string; data?: string; tokenSocket?: string }>();

try {
  const config = initConfigFromEnv({
    listen: flags.listen,
    dataDir: flags.data,
    tokenSocket: flags.tokenSocket,
  });
  const server = await runInit(config, {
    tokenSource: createFlyTokenSource({ socketPath: config.tokenSocket }),
  });
  for (const sig of ["SIGTERM", "SIGINT"] as const) {
    Deno.addSignalListener(sig, () => {
      server.close();
      Deno.exit(0);
    });
  }
} catch (err) {
  console.error(formatError(err));
  Deno.exit(1);
}
