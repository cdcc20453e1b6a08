/**
 * The admin HTTP address: `/healthz` and Prometheus `/metrics`.
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

/** Serves `/healthz` and `/metrics` for `proxy` on `hostname:port`. */
export function startAdmin(
  proxy: Proxy,
  listen: { hostname: string; port: number },
): Promise<AdminServer> {
  return new Promise((resolve) => {
    const server = Deno.serve({
      hostname: listen.hostname,
      port: listen.port,
      onListen(addr) {
        resolve({
          hostname: addr.hostname,
          port: addr.port,
          close: () => server.shutdown(),
        });
      },
    }, async (req) => {
      const path = new URL(req.url).pathname;
      if (path === "/healthz") {
        return Response.json({
          ok: true,
          sessions: proxy.stats.sessions,
          pending: proxy.stats.pending,
        });
      }
      if (path === "/metrics") {
        return new Response(await proxy.metrics.registry.metrics(), {
          headers: { "content-type": proxy.metrics.registry.contentType },
        });
      }
      return new Response("not found: try /healthz or /metrics\n", { status: 404 });
    });
  });
}
