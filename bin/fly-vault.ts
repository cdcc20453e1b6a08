/**
 * fly-vault: the client. Parses flags and calls src/client; nothing else.
 * Start-up matters (every `exec` pays it): an exec through a live master goes
 * out before the rest of the client is loaded (src/client/master_fast.ts);
 * see src/client/cli.ts for the fast parser.
 */
import { fastExecArgv } from "../src/client/cli.ts";
import { fastExec } from "../src/client/master_fast.ts";
import { mark } from "../src/client/timing.ts";
// Not transport/mod.ts (it loads the whole transport): the check alone.
import { trustPollution } from "../src/transport/trust_env.ts";

mark("client.loaded");
const fast = fastExecArgv(Deno.args);
// Through a master this process dials nothing, so a trust store widened by the environment
// (which the usual path restarts the program to shed) does not matter: only its fallback to
// its own connection restarts first. The restarted child itself takes the usual path.
if (fast && Deno.env.get("FLY_VAULT_ORIGINAL_TRUST") === undefined) {
  const status = await fastExec(fast, trustPollution().length > 0);
  if (status !== null) {
    mark("client.done");
    Deno.exit(status);
  }
}
// First: it must run before any zod schema is built.
await import("../src/client/zod_jitless.ts");
const { ensureCleanTrustStore } = await import("../src/client/trust.ts");
const { main } = await import("../src/client/cli.ts");
// Before anything can dial: a pin must be the only CA a vault connection trusts.
await ensureCleanTrustStore();
const status = await main(Deno.args);
mark("client.done");
Deno.exit(status);
