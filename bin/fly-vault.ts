/**
 * fly-vault: the client. Parses flags and calls src/client; nothing else.
 * Start-up matters (every `exec` pays it): see src/client/cli.ts for the fast path.
 */
// First: it must run before any zod schema is built.
import "../src/client/zod_jitless.ts";
import { ensureCleanTrustStore } from "../src/client/trust.ts";
import { main } from "../src/client/cli.ts";

// Before anything can dial: a pin must be the only CA a vault connection trusts.
await ensureCleanTrustStore();
Deno.exit(await main(Deno.args));
