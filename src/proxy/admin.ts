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
      // A failing scrape is counted and answered 500; it never ends the server.
      onError(err) {
        proxy.stats.errors["proxy.admin"] = (proxy.stats.errors["proxy.admin"] ?? 0) + 1;
        return new Response(`error: ${String(err)}\n`, { status: 500 });
      },
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
    });
  });
}
