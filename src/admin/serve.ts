/**
 * `tenant usage-facts --listen`: the usage facts over HTTP for metering
 * adapters. `GET /usage-facts` (bearer-protected when a token is set) and
 * `GET /healthz` (always open: a liveness probe carries no secrets).
 *
 * @module
 */
import { timingSafeEqual } from "node:crypto";
import { VaultError } from "../errors/mod.ts";

/** A running usage-facts server. */
export interface UsageServer {
  /** `http://host:port`. */
  url: string;
  /** Resolves once the server has shut down. */
  finished: Promise<void>;
  shutdown(): Promise<void>;
}

/** Parses `HOST:PORT`, `[V6]:PORT` or `:PORT`. */
export function parseListen(addr: string): { hostname: string; port: number } {
  const m = addr.match(/^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) {
    throw new VaultError(
      "admin.bad_listen",
      `--listen ${JSON.stringify(addr)} is not HOST:PORT`,
      "e.g. --listen 127.0.0.1:18083",
    );
  }
  return { hostname: m[1] ?? (m[2] || "0.0.0.0"), port };
}

async function digest(s: string): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(s)));
}

/** Serves usage facts; `facts()` is called afresh for every request. */
export async function serveUsageFacts(opts: {
  hostname: string;
  port: number;
  bearerToken?: string;
  facts: () => Promise<unknown>;
  log?: (line: string) => void;
}): Promise<UsageServer> {
  const log = opts.log ?? (() => {});
  // Comparing digests keeps the comparison constant-time whatever the lengths.
  const expected = opts.bearerToken !== undefined
    ? await digest(`Bearer ${opts.bearerToken}`)
    : undefined;
  const reply = (status: number, body: unknown, headers: Record<string, string> = {}) =>
    new Response(JSON.stringify(body) + "\n", {
      status,
      headers: { "content-type": "application/json", "cache-control": "no-store", ...headers },
    });
  const { promise: listening, resolve } = Promise.withResolvers<Deno.NetAddr>();
  const server = Deno.serve({
    hostname: opts.hostname,
    port: opts.port,
    onListen: (addr) => resolve(addr as Deno.NetAddr),
  }, async (req) => {
    const { pathname } = new URL(req.url);
    if (req.method !== "GET" && req.method !== "HEAD") {
      return reply(405, { error: "method not allowed" }, { allow: "GET" });
    }
    if (pathname === "/healthz") return reply(200, { ok: true });
    if (pathname !== "/usage-facts") return reply(404, { error: "not found" });
    if (expected) {
      const got = await digest(req.headers.get("authorization") ?? "");
      if (!timingSafeEqual(got, expected)) {
        return reply(401, { error: "unauthorized" }, { "www-authenticate": "Bearer" });
      }
    }
    try {
      return reply(200, await opts.facts());
    } catch (err) {
      log(`usage-facts: ${(err as Error).message}`);
      const code = err instanceof VaultError ? err.code : "internal";
      return reply(502, { error: (err as Error).message, code });
    }
  });
  const addr = await listening;
  const host = addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname;
  return {
    url: `http://${host}:${addr.port}`,
    finished: server.finished,
    shutdown: () => server.shutdown(),
  };
}
