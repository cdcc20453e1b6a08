/**
 * The admin HTTP address: `/healthz` and Prometheus `/metrics`.
 *
 * A deliberately small HTTP/1.1 server (one GET per connection, then close) rather than
 * `Deno.serve`: whoever reaches this port must not be able to spend the proxy's file
 * descriptors, which are its sessions (each one upstream socket). `Deno.serve` keeps every
 * connection it accepts, idle or slow, for as long as the peer likes: 230 idle connections under
 * a 256-descriptor limit took every descriptor, so no client could open a session, and the admin
 * listener itself stopped accepting. Here at most {@link MAX_ADMIN_CONNECTIONS} are open at once
 * (more are closed as soon as accepted), each has {@link ADMIN_DEADLINE_MS} to send its request
 * and be answered, and a request head is at most {@link MAX_REQUEST_HEAD} bytes. It reveals
 * counts only: no client address, machine id or token.
 *
 * @module
 */
import type { Proxy } from "./proxy.ts";

/** A running admin server. */
export interface AdminServer {
  hostname: string;
  port: number;
  close(): Promise<void>;
}

/** Admin connections open at once; beyond, a new one is closed at once. */
export const MAX_ADMIN_CONNECTIONS = 16;
/** Time a connection has to send its request and read the answer. */
export const ADMIN_DEADLINE_MS = 5_000;
/** Largest request head (request line and headers) read. */
export const MAX_REQUEST_HEAD = 8 * 1024;

/** Serves `/healthz` and `/metrics` for `proxy` on `hostname:port`. */
export function startAdmin(
  proxy: Proxy,
  listen: { hostname: string; port: number },
): Promise<AdminServer> {
  const listener = Deno.listen({ hostname: listen.hostname, port: listen.port });
  const addr = listener.addr as Deno.NetAddr;
  const open = new Set<Deno.Conn>();
  let closed = false;
  const count = (code: string) => {
    proxy.stats.errors[code] = (proxy.stats.errors[code] ?? 0) + 1;
  };

  const loop = (async () => {
    while (!closed) {
      let conn: Deno.Conn;
      try {
        conn = await listener.accept();
      } catch (err) {
        if (closed || err instanceof Deno.errors.BadResource) return;
        // EMFILE and the like: the proxy is out of descriptors. Keep the listener; try later.
        count("proxy.admin_accept");
        await new Promise((r) => setTimeout(r, 100));
        continue;
      }
      if (open.size >= MAX_ADMIN_CONNECTIONS) {
        count("proxy.admin_busy");
        conn.close();
        continue;
      }
      open.add(conn);
      void serve(conn).finally(() => {
        open.delete(conn);
        try {
          conn.close();
        } catch { /* already closed by the deadline */ }
      });
    }
  })();

  async function serve(conn: Deno.Conn) {
    const deadline = setTimeout(() => {
      count("proxy.admin_timeout");
      try {
        conn.close();
      } catch { /* closed */ }
    }, ADMIN_DEADLINE_MS);
    try {
      const head = await readHead(conn);
      if (head === undefined) return;
      const [method, target] = head.split("\r\n", 1)[0].split(" ");
      const res = method === "GET" || method === "HEAD"
        ? await answer(target ?? "/")
        : new Response("only GET\n", { status: 405 });
      await write(conn, res, method === "HEAD");
    } catch {
      // The peer went away or its deadline closed the connection: nothing to answer.
    } finally {
      clearTimeout(deadline);
    }
  }

  async function answer(target: string): Promise<Response> {
    const path = target.split("?", 1)[0];
    try {
      if (path === "/healthz") {
        return Response.json({
          ok: true,
          sessions: proxy.stats.sessions,
          max_sessions: proxy.limits.maxSessions,
          pending: proxy.stats.pending,
          refusals: proxy.stats.refusals,
        });
      }
      if (path === "/metrics") {
        return new Response(await proxy.metrics.registry.metrics(), {
          headers: { "content-type": proxy.metrics.registry.contentType },
        });
      }
      return new Response("not found: try /healthz or /metrics\n", { status: 404 });
    } catch {
      // A failing scrape is counted and answered 500; it never ends the server.
      count("proxy.admin");
      return new Response("error\n", { status: 500 });
    }
  }

  return Promise.resolve({
    hostname: addr.hostname,
    port: addr.port,
    async close() {
      closed = true;
      listener.close();
      for (const c of open) {
        try {
          c.close();
        } catch { /* closed */ }
      }
      await loop;
    },
  });
}

/** The request head (up to the blank line), or undefined if the peer sent none in bounds. */
async function readHead(conn: Deno.Conn): Promise<string | undefined> {
  const buf = new Uint8Array(MAX_REQUEST_HEAD);
  let n = 0;
  while (n < buf.length) {
    const got = await conn.read(buf.subarray(n));
    if (got === null) return undefined;
    n += got;
    const text = new TextDecoder().decode(buf.subarray(0, n));
    if (text.includes("\r\n\r\n") || text.includes("\n\n")) return text;
  }
  return undefined;
}

async function write(conn: Deno.Conn, res: Response, headOnly: boolean) {
  const body = new Uint8Array(await res.arrayBuffer());
  const reason = res.status === 200 ? "OK" : res.status === 404 ? "Not Found" : "Error";
  let head = `HTTP/1.1 ${res.status} ${reason}\r\n`;
  for (const [k, v] of res.headers) head += `${k}: ${v}\r\n`;
  head += `content-length: ${body.length}\r\nconnection: close\r\n\r\n`;
  const out = new TextEncoder().encode(head);
  for (const part of headOnly ? [out] : [out, body]) {
    let off = 0;
    while (off < part.length) off += await conn.write(part.subarray(off));
  }
}
