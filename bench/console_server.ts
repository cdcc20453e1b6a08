/**
 * The init side for the console and forward benchmarks, in its own process
 * (as on a real machine, so client and server do not share one JS thread):
 * the real QUIC transport and this area's handlers, without attestation or
 * auth (they cost nothing per keystroke or per byte). Prints one JSON line:
 * `{ port, caPem, serverName }`.
 */
import { createInteractiveHandlers } from "../src/console/mod.ts";
import { createMachineIdentity, serverNameFor } from "../src/pki/mod.ts";
import { ExecRequest, FrameReader, FrameWriter, StreamTag } from "../src/protocol/mod.ts";
import { listenQuic } from "../src/transport/mod.ts";
import { buildTestRootfs } from "../tests/console_rootfs.ts";

const rootfs = await buildTestRootfs();
const bundle = createInteractiveHandlers();
const identity = await createMachineIdentity({ machineId: "bench" });
const listener = listenQuic({
  hostname: "127.0.0.1",
  port: 0,
  certChainPem: identity.chainPem,
  keyPem: identity.leafKeyPem,
});
const ctx = { store: { rootfsDir: rootfs } };
const cleanup = async () => {
  await bundle.closeAll();
  Deno.removeSync(rootfs, { recursive: true });
  Deno.exit(0);
};
Deno.addSignalListener("SIGTERM", cleanup);
console.log(JSON.stringify({
  port: listener.addr.port,
  caPem: identity.identityPem,
  serverName: serverNameFor("bench"),
}));
for await (const conn of listener.connections()) {
  (async () => {
    for await (const stream of conn.incoming()) {
      const reader = new FrameReader(stream.readable);
      const writer = new FrameWriter(stream.writable);
      (async () => {
        if (stream.tag === StreamTag.console) {
          await bundle.handlers.console(reader, writer, ctx);
        } else if (stream.tag === StreamTag.forward) {
          await bundle.handlers.forward(reader, writer, ctx);
        } else if (stream.tag === StreamTag.exec) {
          const execRequest = await reader.message(ExecRequest, "exec");
          await bundle.handlers.execTty(reader, writer, { ...ctx, execRequest });
        }
      })().catch(() => {});
    }
  })();
}
