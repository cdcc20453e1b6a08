/**
 * Byte piping between a TCP connection and a stream, with half-close. Deno's
 * `TcpConn.writable` closes the whole socket when it is closed, which would
 * turn a half-close into a full close; these helpers finish writing with
 * `closeWrite()` and close the socket only once both directions are done.
 *
 * The forward path is built for throughput: stream → TCP is one `pipeTo`,
 * which Deno runs natively (no JS per chunk) when the stream is a QUIC
 * receive stream and the destination a socket; TCP → stream reads up to
 * {@link BULK} bytes at a time into two buffers it reuses, the next read
 * overlapping the previous write. Memory per connection stays bounded: one
 * write in flight, and QUIC flow control holds the sender back.
 *
 * @module
 */
import type { ByteStream } from "../protocol/mod.ts";

/** Read size of a connection until it shows it is a bulk one (a read that fills the buffer). */
const SMALL = 16 * 1024;
/** Read size of a bulk connection: fewer, larger reads and writes cost less per byte. */
export const BULK = 256 * 1024;
const CHUNK = 64 * 1024;

const ignore = () => {};

/** A TCP connection as a {@link ByteStream}: closing the writable half-closes the socket. */
export function tcpByteStream(
  conn: Deno.TcpConn | Deno.Conn,
): ByteStream & { done: Promise<void> } {
  let readDone = false;
  let writeDone = false;
  let resolveDone!: () => void;
  const done = new Promise<void>((r) => resolveDone = r);
  const finish = () => {
    if (readDone && writeDone) {
      try {
        conn.close();
      } catch {
        // already closed
      }
      resolveDone();
    }
  };
  let buf = new Uint8Array(CHUNK);
  const readable = new ReadableStream<Uint8Array>({
    async pull(c) {
      let n: number | null;
      try {
        n = await conn.read(buf);
      } catch (err) {
        readDone = true;
        finish();
        c.error(err);
        return;
      }
      if (n === null) {
        readDone = true;
        finish();
        c.close();
      } else if (n < SMALL / 2) {
        // Interactive traffic: copy out the few bytes and keep the buffer.
        c.enqueue(buf.slice(0, n));
      } else {
        c.enqueue(buf.subarray(0, n));
        buf = new Uint8Array(CHUNK);
      }
    },
    cancel() {
      readDone = true;
      finish();
    },
  }, { highWaterMark: 0 });
  const writable = new WritableStream<Uint8Array>({
    async write(chunk) {
      await writeAll(conn, chunk);
    },
    async close() {
      try {
        await conn.closeWrite();
      } catch {
        // peer already gone
      }
      writeDone = true;
      finish();
    },
    abort() {
      writeDone = true;
      readDone = true;
      finish();
    },
  });
  return { readable, writable, done };
}

async function writeAll(conn: Deno.Conn, chunk: Uint8Array): Promise<void> {
  let off = 0;
  while (off < chunk.length) off += await conn.write(chunk.subarray(off));
}

/**
 * Copies what `conn` reads into `to` until the peer half-closes, then closes
 * `to`. Reads go into two buffers used in turn, so `to` must be done with a
 * chunk when its write resolves (Deno's QUIC and TCP writables are: they copy
 * into the transport's own buffer). The next read runs while the previous
 * write is in flight; no more than that is ever held.
 */
export async function tcpToWriter(
  conn: Deno.Conn,
  to: WritableStreamDefaultWriter<Uint8Array>,
): Promise<number> {
  let total = 0;
  let size = SMALL;
  let cur: Uint8Array<ArrayBuffer> = new Uint8Array(size);
  let spare: Uint8Array<ArrayBuffer> | undefined;
  let inflight: Promise<void> | undefined;
  while (true) {
    const n = await conn.read(cur);
    if (inflight) await inflight;
    inflight = undefined;
    if (n === null) break;
    total += n;
    inflight = to.write(cur.subarray(0, n));
    // Seen as handled now; the rejection is still thrown where it is awaited.
    inflight.catch(ignore);
    if (n === cur.length && size < BULK) {
      size = BULK;
      spare = undefined;
    }
    const next = spare?.length === size ? spare : new Uint8Array(size);
    spare = cur;
    cur = next;
  }
  await to.close();
  return total;
}

/** A forward's stream once its header is done: bytes read ahead, then the rest. */
export interface RemoteStream {
  /** Bytes the frame reader read past the header; they come before `readable`. */
  head: Uint8Array[];
  readable: ReadableStream<Uint8Array>;
  writer: WritableStreamDefaultWriter<Uint8Array>;
}

/**
 * A forward's stream whose header went out but whose answer has not come
 * yet: bytes may already be written (pipelined), the far side buffers them
 * until its own connect is done. `reply` rejects when the far side refused.
 */
export interface PendingRemote {
  writer: WritableStreamDefaultWriter<Uint8Array>;
  reply: Promise<{ head: Uint8Array[]; readable: ReadableStream<Uint8Array> }>;
}

/**
 * Joins `conn` and `remote` until both directions are done (each half-closed
 * on its own), then closes the socket. Either direction failing, or `signal`
 * aborting, tears both down: the socket is closed and the stream reset.
 */
export async function spliceTcp(
  conn: Deno.TcpConn,
  remote: RemoteStream | PendingRemote,
  signal?: AbortSignal,
): Promise<void> {
  const stop = new AbortController();
  let failed = false;
  let readable = "readable" in remote ? remote.readable : undefined;
  const teardown = (reason: unknown) => {
    if (failed) return;
    failed = true;
    stop.abort(reason);
    remote.writer.abort(reason).catch(ignore);
    if (readable && !readable.locked) readable.cancel(reason).catch(ignore);
    try {
      conn.close();
    } catch {
      // already closed
    }
  };
  const onAbort = () => teardown(signal?.reason ?? new Error("forward closed"));
  if (signal?.aborted) onAbort();
  signal?.addEventListener("abort", onAbort, { once: true });
  const down = (async () => {
    // Pipelined: the socket's bytes flow up (below) while the answer is still on its way.
    const r = "reply" in remote ? await remote.reply : remote;
    readable = r.readable;
    if (failed) {
      readable.cancel(stop.signal.reason).catch(ignore);
      return;
    }
    for (const chunk of r.head) await writeAll(conn, chunk);
    await readable.pipeTo(conn.writable, { preventClose: true, signal: stop.signal });
    await conn.closeWrite().catch(ignore);
  })();
  const up = tcpToWriter(conn, remote.writer);
  const results = await Promise.allSettled([
    down.catch((err) => {
      teardown(err);
      throw err;
    }),
    up.catch((err) => {
      teardown(err);
      throw err;
    }),
  ]);
  signal?.removeEventListener("abort", onAbort);
  try {
    conn.close();
  } catch {
    // closed by a failure, or by the writable's abort
  }
  const bad = results.find((r) => r.status === "rejected");
  if (bad) throw (bad as PromiseRejectedResult).reason;
}
