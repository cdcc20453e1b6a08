/**
 * Child process for the crash tests: provisions the tar.gz read from stdin
 * into the data directory given as argument, printing one line per progress
 * call, so the parent can SIGKILL it at a known point (also see
 * `FLY_VAULT_PROVISION_STOP_AT`). Does nothing when imported.
 */
import { openRootfsStore } from "../src/rootfs/mod.ts";

if (import.meta.main) {
  const store = await openRootfsStore(Deno.args[0]);
  console.log(`ready ${Deno.pid}`);
  const r = await store.provision(Deno.stdin.readable, {
    progressIntervalMs: 0,
    onProgress: (p) => console.log(`progress ${p.phase} ${p.compressedBytes} ${p.entries}`),
  });
  console.log(`done ${r.sha256}`);
}
