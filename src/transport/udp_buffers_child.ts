/**
 * Child of udp_buffers_test.ts, run without FFI permission: listens, dials itself, echoes one
 * stream, and prints `{"echoed": ...}`. The tuning must fail quietly (one stderr line) around it.
 */
import { StreamTag } from "../protocol/mod.ts";
import { dialQuic, listenQuic } from "./mod.ts";

const listener = listenQuic({
  hostname: "127.0.0.1",
  port: 0,
  certChainPem: Deno.env.get("CHAIN")!,
  keyPem: Deno.env.get("KEY")!,
});
(async () => {
  for await (const conn of listener.connections()) {
    for await (const s of conn.incoming()) s.readable.pipeTo(s.writable).catch(() => {});
  }
})();
const client = await dialQuic({
  address: `127.0.0.1:${listener.addr.port}`,
  serverName: "be0c4b0c4b0c4b.vault.internal",
  caPem: Deno.env.get("CA")!,
  timeoutMs: 5_000,
});
const s = await client.openStream(StreamTag.exec);
const w = s.writable.getWriter();
await w.write(new TextEncoder().encode("hello"));
await w.close();
let echoed = "";
for await (const c of s.readable.pipeThrough(new TextDecoderStream())) echoed += c;
console.log(JSON.stringify({ echoed }));
await client.close();
listener.close();
Deno.exit(0);
