/**
 * Runs as a client program would: cleans its trust store first, then fetches
 * `Deno.args[0]` over HTTPS and reports what it saw. Exits 7 so the test can
 * see the status pass through a restart.
 */
import { ensureCleanTrustStore } from "../src/client/mod.ts";
import { trustPollution } from "../src/transport/mod.ts";

await ensureCleanTrustStore();
let fetched: string;
try {
  const res = await fetch(Deno.args[0]);
  fetched = `${res.status} ${await res.text()}`;
} catch (err) {
  fetched = `failed: ${(err as Error).message}`;
}
console.log(JSON.stringify({
  fetched,
  args: Deno.args.slice(1),
  pollution: trustPollution(),
  restarted: Deno.env.get("FLY_VAULT_ORIGINAL_TRUST") !== undefined,
}));
Deno.exit(7);
