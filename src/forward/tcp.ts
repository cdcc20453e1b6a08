/**
 * Byte piping with half-close. Deno's `TcpConn.writable` closes the whole
 * socket when it is closed, which would turn a half-close into a full close;
 * these helpers read with `read()` and finish writing with `closeWrite()`,
 * and close the socket only once both directions are done.
 *
 * @module
 */
import type { ByteStream } from "../protocol/mod.ts";

const CHUNK = 64 * 1024;
const SMALL = 8 * 1024;

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
      } else if (n < SMALL) {
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
      let off = 0;
      while (off < chunk.length) off += await conn.write(chunk.subarray(off));
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

/**
 * Copies `from` into `to` and then closes `to` (a half-close), returning
 * the byte count. A failure on either side aborts `to` and rethrows.
 */
export async function pipeHalf(
  from: ReadableStream<Uint8Array>,
  to: WritableStreamDefaultWriter<Uint8Array>,
): Promise<number> {
  let n = 0;
  try {
    for await (const chunk of from) {
      n += chunk.length;
      await to.write(chunk);
    }
  } catch (err) {
    await to.abort(err).catch(() => {});
    throw err;
  }
  await to.close().catch(() => {});
  return n;
}
