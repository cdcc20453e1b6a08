/**
 * Test stand-in for the QUIC transport until the real one is wired: each
 * TCP connection on 127.0.0.1 is one stream, its first byte the tag, with
 * half-close kept. `dropAll()` kills every open connection (a lost network).
 *
 * @module
 */
import { FrameReader, FrameWriter, type StreamTag } from "../src/protocol/mod.ts";
import { tcpByteStream } from "../src/forward/mod.ts";
import type { ByteStream } from "../src/protocol/mod.ts";

export type Handler = (tag: number, reader: FrameReader, writer: FrameWriter) => Promise<void>;

export interface LoopbackServer {
  port: number;
  openStream: (tag: StreamTag) => Promise<ByteStream>;
  dropAll(): void;
  close(): Promise<void>;
}

/** Opens one stream to a loopback server on `port`. */
export async function loopbackOpen(port: number, tag: StreamTag): Promise<ByteStream> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  conn.setNoDelay(true);
  const s = tcpByteStream(conn);
  const w = s.writable.getWriter();
  await w.write(new Uint8Array([tag]));
  w.releaseLock();
  return s;
}

export function startLoopbackServer(handler: Handler): LoopbackServer {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.TcpConn>();
  const tasks = new Set<Promise<void>>();
  const serve = async (conn: Deno.TcpConn) => {
    conns.add(conn);
    conn.setNoDelay(true);
    const s = tcpByteStream(conn);
    const reader = new FrameReader(s.readable);
    const writer = new FrameWriter(s.writable);
    try {
      const tag = await reader.byte();
      if (tag !== null) await handler(tag, reader, writer);
    } catch (err) {
      // The test sees the effect on the client side; FV_DEBUG=1 shows the cause.
      if (Deno.env.get("FV_DEBUG")) console.error("loopback handler:", err);
    } finally {
      await writer.close();
      conns.delete(conn);
    }
  };
  const accepting = (async () => {
    try {
      for await (const conn of listener) {
        const t = serve(conn);
        tasks.add(t);
        t.finally(() => tasks.delete(t));
      }
    } catch {
      // closed
    }
  })();
  const port = (listener.addr as Deno.NetAddr).port;
  let closed = false;
  return {
    port,
    openStream: (tag) => loopbackOpen(port, tag),
    dropAll() {
      for (const c of conns) {
        try {
          c.close();
        } catch {
          // gone
        }
      }
    },
    async close() {
      if (closed) return;
      closed = true;
      listener.close();
      this.dropAll();
      await accepting;
      await Promise.allSettled([...tasks]);
    },
  };
}
