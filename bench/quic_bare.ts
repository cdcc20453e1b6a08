/**
 * The far side for bench/forward_bench.ts, in its own process (as init is on
 * a machine), so every figure of that bench crosses the same two processes:
 *
 * - `bare`: a Deno QUIC endpoint with nothing of ours on it. Each stream
 *   starts with a 13-byte command: `u` (read and discard to the end, then
 *   answer the byte count), `d` (write COUNT bytes in WRITE-byte writes), or
 *   the variants of {@link Command}; then u32 WRITE, u64 COUNT, big-endian.
 * - `tagged`: our transport (`listenQuic`, tagged streams). A forward stream
 *   is served by the real `serveForward`; a stream of any other tag (the
 *   bench uses `copy`) carries the bare commands over the tagged stream.
 *
 *   deno run -A --unstable-net bench/quic_bare.ts [CONGESTION]
 *
 * Prints one JSON line: `{ barePort, taggedPort, caPem, serverName }`. Also
 * exports the client halves of the measurements.
 */
import { serveForward } from "../src/forward/mod.ts";
import { createMachineIdentity, serverNameFor } from "../src/pki/mod.ts";
import { ALPN, FrameReader, FrameWriter, StreamTag } from "../src/protocol/mod.ts";
import { listenQuic, type TaggedStream } from "../src/transport/mod.ts";

/** Deno's congestion controllers. */
export type Congestion = "default" | "throughput" | "low-latency";

/**
 * What a measurement stream asks of the far side: `u`/`d` (upload/download)
 * move the bytes through JS at both ends (a write or read per chunk, as a
 * program using the stream does), `U`/`D` through Deno's native pipe at both
 * ends (`pipeTo` between a file and the QUIC stream, no JS per chunk), and
 * `v`/`w` write through JS but read natively, the cheapest pair here.
 */
export interface Command {
  op: "u" | "d" | "U" | "D" | "v" | "w";
  /** Write size the far side uses for `d`. */
  write: number;
  /** Bytes to move. */
  count: number;
}

function encodeCommand(cmd: Command): Uint8Array {
  const out = new Uint8Array(13);
  const v = new DataView(out.buffer);
  out[0] = cmd.op.charCodeAt(0);
  v.setUint32(1, cmd.write);
  v.setBigUint64(5, BigInt(cmd.count));
  return out;
}

/** Reads exactly `n` bytes (a BYOB read takes no more) and unlocks the stream again. */
async function readExact(readable: ReadableStream<Uint8Array>, n: number): Promise<Uint8Array> {
  const reader = readable.getReader({ mode: "byob" });
  let buf = new Uint8Array(n);
  let have = 0;
  while (have < n) {
    const r = await reader.read(buf.subarray(have));
    if (r.done || !r.value) throw new Error(`stream ended after ${have} of ${n} bytes`);
    have += r.value.length;
    buf = new Uint8Array(r.value.buffer);
  }
  reader.releaseLock();
  return buf;
}

/** Writes `count` bytes in `write`-byte writes, one await per write (as any pipe does). */
async function blast(
  writer: WritableStreamDefaultWriter<Uint8Array>,
  write: number,
  count: number,
) {
  // A fresh buffer per write: a writable may keep the chunk it was given.
  let left = count;
  while (left > 0) {
    const n = Math.min(write, left);
    await writer.write(new Uint8Array(n));
    left -= n;
  }
}

/** Reads to the end, returning the byte count. */
async function drain(readable: ReadableStream<Uint8Array>): Promise<number> {
  let n = 0;
  for await (const chunk of readable) n += chunk.length;
  return n;
}

/** A file of `count` zero bytes (sparse: reading it is a copy from the page cache, no disk). */
async function zeros(count: number): Promise<Deno.FsFile> {
  const path = await Deno.makeTempFile({ prefix: "quic-bare-" });
  await Deno.truncate(path, count);
  const file = await Deno.open(path, { read: true });
  await Deno.remove(path);
  return file;
}

const devNull = () => Deno.open("/dev/null", { write: true });

async function reply(writable: WritableStream<Uint8Array>, n: number) {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, BigInt(n));
  const writer = writable.getWriter();
  await writer.write(out);
  await writer.close();
}

/** The far side of one measurement stream. */
async function serveCommand(stream: {
  readable: ReadableStream<Uint8Array>;
  writable: WritableStream<Uint8Array>;
}): Promise<void> {
  const head = await readExact(stream.readable, 13);
  const v = new DataView(head.buffer, head.byteOffset, 13);
  const op = String.fromCharCode(head[0]);
  const write = v.getUint32(1);
  const count = Number(v.getBigUint64(5));
  if (op === "u") {
    await reply(stream.writable, await drain(stream.readable));
  } else if (op === "U" || op === "v") {
    await stream.readable.pipeTo((await devNull()).writable);
    await reply(stream.writable, count);
  } else if (op === "d" || op === "w") {
    const writer = stream.writable.getWriter();
    await blast(writer, write, count);
    await writer.close();
    await stream.readable.cancel().catch(() => {});
  } else {
    await (await zeros(count)).readable.pipeTo(stream.writable);
    await stream.readable.cancel().catch(() => {});
  }
}

/**
 * Client half: runs `cmd` on a fresh stream (tag already written for the
 * tagged case) and returns Gbit/s.
 */
export async function measure(
  stream: { readable: ReadableStream<Uint8Array>; writable: WritableStream<Uint8Array> },
  cmd: Command,
): Promise<{ gbps: number; bytes: number }> {
  const source = cmd.op === "U" ? await zeros(cmd.count) : undefined;
  const sink = cmd.op === "D" || cmd.op === "w" ? await devNull() : undefined;
  const writer = stream.writable.getWriter();
  const start = performance.now();
  await writer.write(encodeCommand(cmd));
  let bytes = cmd.count;
  if (cmd.op === "u" || cmd.op === "U" || cmd.op === "v") {
    if (source) {
      writer.releaseLock();
      await source.readable.pipeTo(stream.writable);
    } else {
      await blast(writer, cmd.write, cmd.count);
      await writer.close();
    }
    const head = await readExact(stream.readable, 8);
    bytes = Number(new DataView(head.buffer, head.byteOffset, 8).getBigUint64(0));
    if (bytes !== cmd.count) throw new Error(`far side read ${bytes} of ${cmd.count}`);
    await stream.readable.cancel().catch(() => {});
  } else {
    await writer.close();
    if (sink) await stream.readable.pipeTo(sink.writable);
    else bytes = await drain(stream.readable);
    if (bytes !== cmd.count) throw new Error(`read ${bytes} of ${cmd.count}`);
  }
  const seconds = (performance.now() - start) / 1000;
  return { gbps: bytes * 8 / seconds / 1e9, bytes };
}

/** Client: a bare Deno QUIC connection to the server's bare port. */
export function connectBare(
  info: { barePort: number; caPem: string; serverName: string },
  congestion: Congestion = "default",
): Promise<Deno.QuicConn> {
  return Deno.connectQuic<false>({
    hostname: "127.0.0.1",
    port: info.barePort,
    serverName: info.serverName,
    alpnProtocols: [ALPN],
    caCerts: [info.caPem],
    congestionControl: congestion,
  });
}

async function serveTaggedStream(stream: TaggedStream): Promise<void> {
  if (stream.tag === StreamTag.forward) {
    return await serveForward(new FrameReader(stream.readable), new FrameWriter(stream.writable));
  }
  // Any other tag is a measurement straight on the tagged stream.
  await serveCommand(stream);
}

if (import.meta.main) {
  const congestion = (Deno.args[0] ?? "default") as Congestion;
  const identity = await createMachineIdentity({ machineId: "bench" });
  const endpoint = new Deno.QuicEndpoint({ hostname: "127.0.0.1", port: 0 });
  const bare = endpoint.listen({
    alpnProtocols: [ALPN],
    cert: identity.chainPem,
    key: identity.leafKeyPem,
    congestionControl: congestion,
  });
  const tagged = listenQuic({
    hostname: "127.0.0.1",
    port: 0,
    certChainPem: identity.chainPem,
    keyPem: identity.leafKeyPem,
  });
  Deno.addSignalListener("SIGTERM", () => Deno.exit(0));
  console.log(JSON.stringify({
    barePort: endpoint.addr.port,
    taggedPort: tagged.addr.port,
    caPem: identity.identityPem,
    serverName: serverNameFor("bench"),
  }));
  (async () => {
    while (true) {
      const conn = await bare.accept();
      (async () => {
        for await (const stream of conn.incomingBidirectionalStreams) {
          serveCommand(stream).catch(() => {});
        }
      })().catch(() => {});
    }
  })();
  for await (const conn of tagged.connections()) {
    (async () => {
      for await (const stream of conn.incoming()) serveTaggedStream(stream).catch(() => {});
    })();
  }
}
