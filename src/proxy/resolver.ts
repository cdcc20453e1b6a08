/**
 * Machine id → backend address. On Fly, by a DNS name template over the 6PN
 * (`{machine_id}.vm.vault-tenants.internal:8443`, AAAA first); elsewhere (and
 * with flysim) through the Machines API. A resolver is just a function, so
 * tests pass their own; {@link cachedResolver} adds a TTL cache in front.
 *
 * @module
 */
import { isIP } from "node:net";
import { z } from "zod";

/** Where a machine's QUIC server listens. `hostname` is an IP literal. */
export interface Backend {
  hostname: string;
  port: number;
}

/** A resolver's answer. "unknown" means the machine does not exist (for this app). */
export type Resolution =
  | { ok: true; backend: Backend }
  | { ok: false; reason: "unknown" | "error"; detail: string };

/** Resolves a machine id (already validated: lowercase letters, digits, '-'). */
export type Resolver = (machineId: string) => Promise<Resolution>;

/** Machine ids the proxy accepts: Fly's are 14 hex digits; allow a little more, never dots. */
export const MACHINE_ID = /^[a-z0-9][a-z0-9-]{0,62}$/;

/** The SNI suffix clients use (`<machine_id>.vault.internal`). */
export const SNI_SUFFIX = ".vault.internal";

/** The machine id named by an SNI, or null when the name is not `<id>.vault.internal`. */
export function machineIdFromSni(sni: string): string | null {
  if (!sni.endsWith(SNI_SUFFIX)) return null;
  const id = sni.slice(0, -SNI_SUFFIX.length);
  return MACHINE_ID.test(id) ? id : null;
}

/** Splits `host:port` or `[v6]:port`. */
export function splitHostPort(s: string): { host: string; port: number } | null {
  const m = s.match(/^\[([^\]]+)\]:(\d+)$/) ?? s.match(/^([^:]+):(\d+)$/);
  if (!m) return null;
  const port = Number(m[2]);
  if (!(port >= 0 && port < 65536)) return null;
  return { host: m[1], port };
}

/**
 * A resolver from a template such as `{machine_id}.vm.vault-tenants.internal:8443`.
 * The name is resolved AAAA first, then A; an IP literal is used as is.
 * NXDOMAIN or no records means "unknown" (Fly only publishes started machines).
 */
export function templateResolver(
  template: string,
  dns: (name: string, type: "AAAA" | "A") => Promise<string[]> = (n, t) => Deno.resolveDns(n, t),
): Resolver {
  if (!template.includes("{machine_id}")) {
    throw new Error(`backend template must contain {machine_id}: ${template}`);
  }
  return async (id) => {
    const hp = splitHostPort(template.replaceAll("{machine_id}", id));
    if (!hp) return { ok: false, reason: "error", detail: "template is not host:port" };
    if (isIP(hp.host)) return { ok: true, backend: { hostname: hp.host, port: hp.port } };
    let lastError = "";
    for (const type of ["AAAA", "A"] as const) {
      try {
        const addrs = await dns(hp.host, type);
        if (addrs.length > 0) return { ok: true, backend: { hostname: addrs[0], port: hp.port } };
      } catch (err) {
        const name = (err as Error)?.name;
        // NotFound is NXDOMAIN / no records; anything else is a resolver failure.
        if (name !== "NotFound") lastError = String((err as Error)?.message ?? err);
      }
    }
    return lastError
      ? { ok: false, reason: "error", detail: lastError }
      : { ok: false, reason: "unknown", detail: `no AAAA or A record for ${hp.host}` };
  };
}

const MachineReply = z.looseObject({
  id: z.string(),
  state: z.string().optional(),
  private_ip: z.string().optional(),
});

/**
 * A resolver through the Machines API: `GET {url}/v1/apps/{app}/machines/{id}`.
 * The app is in the path, so a machine of another app is a 404 ("unknown");
 * the reply's `id` must be the one asked for. The address is
 * `[private_ip]:port` (8443 by default, DESIGN §7).
 */
export function machinesApiResolver(opts: {
  url: string;
  app: string;
  token?: string;
  port?: number;
  fetch?: typeof fetch;
  timeoutMs?: number;
}): Resolver {
  const f = opts.fetch ?? fetch;
  const base = opts.url.replace(/\/+$/, "");
  return async (id) => {
    const url = `${base}/v1/apps/${encodeURIComponent(opts.app)}/machines/${id}`;
    let res: Response;
    try {
      res = await f(url, {
        headers: opts.token ? { authorization: `Bearer ${opts.token}` } : {},
        signal: AbortSignal.timeout(opts.timeoutMs ?? 3000),
      });
    } catch (err) {
      return { ok: false, reason: "error", detail: `machines API: ${(err as Error).message}` };
    }
    if (res.status === 404) {
      await res.body?.cancel();
      return { ok: false, reason: "unknown", detail: `no machine ${id} in app ${opts.app}` };
    }
    if (!res.ok) {
      await res.body?.cancel();
      return { ok: false, reason: "error", detail: `machines API: HTTP ${res.status}` };
    }
    const parsed = MachineReply.safeParse(await res.json().catch(() => null));
    if (!parsed.success) return { ok: false, reason: "error", detail: "machines API: bad reply" };
    const m = parsed.data;
    if (m.id !== id) return { ok: false, reason: "unknown", detail: `reply names ${m.id}` };
    if (m.state && m.state !== "started") {
      return { ok: false, reason: "unknown", detail: `machine ${id} is ${m.state}` };
    }
    if (!m.private_ip || !isIP(m.private_ip)) {
      return { ok: false, reason: "error", detail: `machine ${id} has no private IP` };
    }
    return { ok: true, backend: { hostname: m.private_ip, port: opts.port ?? 8443 } };
  };
}

/**
 * Caches answers: hits for `ttlMs`, "unknown" for `negativeTtlMs` (a flood of
 * bogus ids must not become a flood of lookups), errors not at all. Concurrent
 * lookups of one id share one request. At most `max` entries.
 */
export function cachedResolver(
  inner: Resolver,
  opts: { ttlMs?: number; negativeTtlMs?: number; max?: number; now?: () => number } = {},
): Resolver {
  const ttl = opts.ttlMs ?? 30_000;
  const negTtl = opts.negativeTtlMs ?? 5_000;
  const max = opts.max ?? 10_000;
  const now = opts.now ?? Date.now;
  const cache = new Map<string, { at: number; r: Resolution }>();
  const inflight = new Map<string, Promise<Resolution>>();
  return (id) => {
    const hit = cache.get(id);
    if (hit) {
      const age = now() - hit.at;
      if (age < (hit.r.ok ? ttl : negTtl)) return Promise.resolve(hit.r);
      cache.delete(id);
    }
    const running = inflight.get(id);
    if (running) return running;
    const p = inner(id).then((r) => {
      inflight.delete(id);
      if (r.ok || r.reason === "unknown") {
        if (cache.size >= max) cache.delete(cache.keys().next().value!);
        cache.set(id, { at: now(), r });
      }
      return r;
    }, (err) => {
      inflight.delete(id);
      return { ok: false, reason: "error", detail: String(err) } as Resolution;
    });
    inflight.set(id, p);
    return p;
  };
}
