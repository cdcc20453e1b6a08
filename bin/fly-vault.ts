/**
 * fly-vault: the client. Parses flags and calls src/client; nothing else.
 * Start-up matters (every `exec` pays it): see src/client/cli.ts for the fast path.
 */
// First: it must run before any zod schema is built.
import "../src/client/zod_jitless.ts";
import { ensureCleanTrustStore } from "../src/client/trust.ts";
import { main } from "../src/client/cli.ts";
import { mark } from "../src/client/timing.ts";

mark("client.loaded");

// Before anything can dial: a pin must be the only CA a vault connection trusts.
await ensureCleanTrustStore();
const status = await main(Deno.args);
mark("client.done");
Deno.exit(status);
