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

/**
 * A resolver's answer. "unknown": the machine does not exist (for this app). "stopped": it
 * exists but is not running (stopped, suspended...) and this resolver does not wake machines.
 * "wake_failed": a wake was tried and the machine did not start; `detail` says why. `woke`: the
 * machine was started for this answer (from which state, how long it took).
 */
export type Resolution =
  | { ok: true; backend: Backend; woke?: { from: string; ms: number } }
  | {
    ok: false;
    reason: "unknown" | "error" | "stopped" | "wake_failed" | "busy";
    /** Why, in words a client may read (a wake failure is repeated in its CONNECTION_CLOSE). */
    detail: string;
    /** The underlying error, for the proxy's log only: it may name internal addresses. */
    cause?: string;
  };

/**
 * Who asks: the proxy passes the client's source prefix (/24 or /56), so a resolver can bound
 * the lookups one network causes ({@link cachedResolver}). Absent for the proxy's own re-lookups.
 */
export interface LookupContext {
  source?: string;
}

/**
 * Resolves a machine id (already validated: lowercase letters, digits, '-'). `invalidate`, when
 * present, forgets a cached answer so the next lookup asks again (a route that got no answer).
 */
export type Resolver = ((machineId: string, ctx?: LookupContext) => Promise<Resolution>) & {
  invalidate?: (machineId: string) => void;
};

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
  dns?: (name: string, type: "AAAA" | "A") => Promise<string[]>,
  opts: { timeoutMs?: number; nameServer?: { ipAddr: string; port: number } } = {},
): Resolver {
  // Each query within `timeoutMs` (default 3 s): Deno's own is 15 s, so a DNS server that stops
  // answering made every new route wait 30 s (two record types), holding a lookup slot.
  const query = dns ?? ((n: string, t: "AAAA" | "A") =>
    Deno.resolveDns(n, t, {
      signal: AbortSignal.timeout(opts.timeoutMs ?? 3_000),
      ...(opts.nameServer ? { nameServer: opts.nameServer } : {}),
    }));
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
        const addrs = await query(hp.host, type);
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
  events: z.array(z.looseObject({
    type: z.string().optional(),
    status: z.string().optional(),
    timestamp: z.number().optional(),
    request: z.looseObject({ error: z.unknown().optional() }).optional(),
  })).optional(),
});

/**
 * States a start (or a wait) can bring to `started`: the proxy wakes these. `failed` too, as
 * `fly-vault wake` does: a start that fails again says so at once.
 */
const WAKEABLE = new Set([
  "stopped",
  "suspended",
  "suspending",
  "stopping",
  "created",
  "starting",
  "failed",
]);
/** States that mean the machine is gone. */
const GONE = new Set(["destroyed", "destroying"]);

/**
 * Largest Machines API reply read (a machine's JSON is a few KiB): more is refused, not read, so
 * a reply without end costs neither memory nor the lookup's whole deadline.
 */
const MAX_REPLY_BYTES = 256 * 1024;

/** The body as text, or undefined when it is longer than `max` bytes or fails midway. */
async function boundedText(res: Response, max: number): Promise<string | undefined> {
  if (!res.body) return "";
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let n = 0;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      n += value.length;
      if (n > max) return undefined;
      chunks.push(value);
    }
  } catch {
    return undefined;
  } finally {
    await reader.cancel().catch(() => {});
  }
  const all = new Uint8Array(n);
  let o = 0;
  for (const c of chunks) {
    all.set(c, o);
    o += c.length;
  }
  return new TextDecoder().decode(all);
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

/**
 * A failed request in words a client may read: a fetch error's message names the URL (the API's
 * internal address, the app), which a stranger asking for a machine id must not learn.
 */
function unreachable(err: unknown): string {
  return unreachableText(String((err as Error)?.name ?? "") + " " + String(err));
}

/** An error's message and its cause's (Deno's fetch says "fetch failed"; the cause says why). */
function errorText(err: unknown): string {
  const e = err as Error & { cause?: unknown };
  const cause = e?.cause instanceof Error ? `: ${e.cause.message}` : "";
  return `${String(e?.message ?? err)}${cause}`;
}

function unreachableText(message: string): string {
  return /timeout|timed out|aborted/i.test(message) ? "did not answer in time" : "unreachable";
}

/** Printable ASCII only, bounded: API text goes into a client's CONNECTION_CLOSE and logs. */
function inert(text: string, max = 200): string {
  return text.replace(/[^\x20-\x7e]/g, "?").slice(0, max);
}

/**
 * A resolver through the Machines API: `GET {url}/v1/apps/{app}/machines/{id}`.
 * The app is in the path, so a machine of another app is a 404 ("unknown");
 * the reply's `id` must be the one asked for. The address is
 * `[private_ip]:port` (8443 by default, DESIGN §7).
 *
 * A machine that is not started is "stopped", or with `wake` it is started
 * (`POST …/start`, which resumes a suspended machine), waited for
 * (`GET …/wait?state=started,failed`) and read again, since a machine started
 * from `stopped` may have a new address. A start that fails is "wake_failed"
 * naming why (the machine's last event), at once rather than at a deadline.
 * The token then needs to read and start the app's machines (nothing else).
 */
export function machinesApiResolver(opts: {
  url: string;
  app: string;
  token?: string;
  port?: number;
  fetch?: typeof fetch;
  timeoutMs?: number;
  /** Start a stopped or suspended machine (default false). */
  wake?: boolean;
  /** Longest a wake may take (default 30 s). */
  wakeTimeoutMs?: number;
}): Resolver {
  const f = opts.fetch ?? fetch;
  const base = opts.url.replace(/\/+$/, "");
  const headers: Record<string, string> = opts.token
    ? { authorization: `Bearer ${opts.token}` }
    : {};
  const machineUrl = (id: string) =>
    `${base}/v1/apps/${encodeURIComponent(opts.app)}/machines/${id}`;

  type Read = { ok: true; m: z.infer<typeof MachineReply> } | Resolution & { ok: false };
  const read = async (id: string): Promise<Read> => {
    let res: Response;
    try {
      res = await f(machineUrl(id), {
        headers,
        signal: AbortSignal.timeout(opts.timeoutMs ?? 3000),
      });
    } catch (err) {
      return {
        ok: false,
        reason: "error",
        detail: `machines API: ${unreachable(err)}`,
        cause: inert(errorText(err), 300),
      };
    }
    if (res.status === 404) {
      await res.body?.cancel();
      return { ok: false, reason: "unknown", detail: `no machine ${id} in app ${opts.app}` };
    }
    if (!res.ok) {
      await res.body?.cancel();
      return { ok: false, reason: "error", detail: `machines API: HTTP ${res.status}` };
    }
    const text = await boundedText(res, MAX_REPLY_BYTES);
    if (text === undefined) {
      return { ok: false, reason: "error", detail: "machines API: reply too large or cut" };
    }
    const parsed = MachineReply.safeParse(parseJson(text));
    if (!parsed.success) return { ok: false, reason: "error", detail: "machines API: bad reply" };
    if (parsed.data.id !== id) {
      return { ok: false, reason: "unknown", detail: `reply names ${inert(parsed.data.id)}` };
    }
    return { ok: true, m: parsed.data };
  };
  const address = (id: string, m: z.infer<typeof MachineReply>): Resolution => {
    if (!m.private_ip || !isIP(m.private_ip)) {
      return { ok: false, reason: "error", detail: `machine ${id} has no private IP` };
    }
    return { ok: true, backend: { hostname: m.private_ip, port: opts.port ?? 8443 } };
  };
  const post = async (url: string, timeoutMs: number): Promise<Response | string> => {
    try {
      return await f(url, {
        method: url.includes("/wait?") ? "GET" : "POST",
        headers,
        signal: AbortSignal.timeout(timeoutMs),
      });
    } catch (err) {
      return errorText(err);
    }
  };

  const wake = async (id: string, from: string): Promise<Resolution> => {
    const started = performance.now();
    const budget = opts.wakeTimeoutMs ?? 30_000;
    if (from !== "starting") {
      const res = await post(`${machineUrl(id)}/start`, budget);
      if (typeof res === "string") {
        return {
          ok: false,
          reason: "wake_failed",
          detail: `start: machines API ${unreachableText(res)}`,
          cause: inert(res, 300),
        };
      }
      const body = await boundedText(res, MAX_REPLY_BYTES) ?? "";
      if (!res.ok) {
        const msg = (() => {
          try {
            const e = JSON.parse(body)?.error;
            return typeof e === "string" ? e : "";
          } catch {
            return "";
          }
        })();
        return {
          ok: false,
          reason: res.status === 404 ? "unknown" : "wake_failed",
          detail: `start refused (HTTP ${res.status}${msg ? `: ${inert(msg)}` : ""})`,
        };
      }
    }
    const waitSec = Math.max(1, Math.min(60, Math.ceil(budget / 1000)));
    const waited = await post(
      `${machineUrl(id)}/wait?state=started,failed&timeout=${waitSec}`,
      budget + 2000,
    );
    if (typeof waited !== "string") await waited.body?.cancel();
    const after = await read(id);
    if (!after.ok) return after.reason === "unknown" ? after : { ...after, reason: "wake_failed" };
    if (after.m.state !== "started") {
      const last = [...(after.m.events ?? [])].sort((a, b) =>
        (b.timestamp ?? 0) - (a.timestamp ?? 0)
      )[0];
      const why = last?.request?.error;
      return {
        ok: false,
        reason: "wake_failed",
        detail: `machine ${id} did not start (${inert(after.m.state ?? "unknown", 32)}${
          typeof why === "string" ? `: ${inert(why, 120)}` : ""
        })`,
      };
    }
    const r = address(id, after.m);
    return r.ok ? { ...r, woke: { from, ms: Math.round(performance.now() - started) } } : r;
  };

  return async (id) => {
    const r = await read(id);
    if (!r.ok) return r;
    const state = r.m.state ?? "started";
    if (state === "started") return address(id, r.m);
    if (GONE.has(state)) {
      return { ok: false, reason: "unknown", detail: `machine ${id} is ${state}` };
    }
    if (!opts.wake || !WAKEABLE.has(state)) {
      return { ok: false, reason: "stopped", detail: `machine ${id} is ${inert(state, 32)}` };
    }
    return await wake(id, state);
  };
}

/**
 * DNS routing with waking: Fly's DNS publishes only started machines, so a
 * name with no record may be a stopped or suspended machine. Such an id is
 * asked of `api` (a {@link machinesApiResolver}, usually with `wake`), which
 * says whether it exists, and starts it.
 */
export function withApiFallback(primary: Resolver, api: Resolver): Resolver {
  const r: Resolver = async (id, ctx) => {
    const first = await primary(id, ctx);
    return first.ok || first.reason !== "unknown" ? first : await api(id, ctx);
  };
  r.invalidate = (id) => {
    primary.invalidate?.(id);
    api.invalidate?.(id);
  };
  return r;
}

/** Options of {@link cachedResolver}. */
export interface CacheOptions {
  /** How long a route is kept (default 30 s). */
  ttlMs?: number;
  /** How long a refusal ("unknown", "wake_failed") is kept (default 5 s). */
  negativeTtlMs?: number;
  /** Entries at most (default 10,000). */
  max?: number;
  /**
   * Lookups that reach `inner` (cache misses), per second, sustained, in all (default 20, burst
   * {@link CacheOptions.missBurst}): every miss may be a Machines API request (or a start), and
   * random machine ids each miss.
   */
  missesPerSecond?: number;
  /** Burst allowance for the above (default 60). */
  missBurst?: number;
  /**
   * Cache misses per second one source prefix may cause (default 2, burst
   * {@link CacheOptions.sourceMissBurst}), so one network spraying random ids cannot spend the
   * shared allowance above and lock everyone else out of new routes.
   */
  sourceMissesPerSecond?: number;
  /** Burst allowance for the above (default 10). */
  sourceMissBurst?: number;
  /**
   * Longest one lookup of `inner` may take (default 90 s): past it the lookup is answered
   * "error" and forgotten, so an inner lookup that never settles is not shared with every later
   * client of that machine forever.
   */
  timeoutMs?: number;
  now?: () => number;
}

/**
 * Caches answers: hits for `ttlMs`; refusals ("unknown", "wake_failed") for `negativeTtlMs`, so
 * neither a flood of bogus ids nor clients of a machine that will not start become a flood of
 * lookups or start requests; "stopped" (a machine the user may start any moment) and errors not
 * at all, the miss rate bounds them. Concurrent lookups of one id
 * share one request. Misses are rate-bounded in all and per source prefix (answered "busy"
 * beyond). At most `max` entries. `invalidate(id)` forgets the id's answer (the proxy calls it
 * when a route gets no answer).
 */
export function cachedResolver(inner: Resolver, opts: CacheOptions = {}): Resolver {
  const ttl = opts.ttlMs ?? 30_000;
  const negTtl = opts.negativeTtlMs ?? 5_000;
  const max = opts.max ?? 10_000;
  const now = opts.now ?? Date.now;
  const rate = opts.missesPerSecond ?? 20;
  const burst = opts.missBurst ?? 60;
  const srcRate = opts.sourceMissesPerSecond ?? 2;
  const srcBurst = opts.sourceMissBurst ?? 10;
  const timeoutMs = opts.timeoutMs ?? 90_000;
  const cache = new Map<string, { at: number; r: Resolution }>();
  const inflight = new Map<string, Promise<Resolution>>();
  const global = { tokens: burst, at: now() };
  const sources = new Map<string, { tokens: number; at: number }>();

  /** Takes a miss from the source's bucket and the global one, or says which is empty. */
  const allowMiss = (source: string | undefined): string | undefined => {
    const t = now();
    let b = source === undefined ? undefined : sources.get(source);
    if (source !== undefined && !b) {
      // Bounded: a full bucket is the same as none, so the oldest-created one can go.
      if (sources.size >= max) sources.delete(sources.keys().next().value!);
      b = { tokens: srcBurst, at: t };
      sources.set(source, b);
    }
    if (b && refill(b, t, srcRate, srcBurst) < 1) return "your network";
    if (refill(global, t, rate, burst) < 1) return "all clients";
    if (b) b.tokens--;
    global.tokens--;
    return undefined;
  };

  const resolve: Resolver = (id, ctx) => {
    const hit = cache.get(id);
    if (hit) {
      const age = now() - hit.at;
      if (age < (hit.r.ok ? ttl : negTtl)) return Promise.resolve(hit.r);
      cache.delete(id);
    }
    const running = inflight.get(id);
    if (running) return running;
    const over = allowMiss(ctx?.source);
    if (over) {
      return Promise.resolve({
        ok: false,
        reason: "busy",
        detail: `machine lookups from ${over} over their rate`,
      });
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    const deadline = new Promise<Resolution>((done) => {
      timer = setTimeout(
        () => done({ ok: false, reason: "error", detail: `lookup took over ${timeoutMs} ms` }),
        timeoutMs,
      );
    });
    const answer = Promise.resolve().then(() => inner(id, ctx)).catch((err) => (
      { ok: false, reason: "error", detail: String(err) } as Resolution
    ));
    const p = Promise.race([answer, deadline]).then((r) => {
      clearTimeout(timer);
      if (inflight.get(id) === p) inflight.delete(id);
      // Not "stopped": `fly-vault wake` then connect must find the machine started at once.
      if (r.ok || r.reason === "unknown" || r.reason === "wake_failed") {
        if (cache.size >= max) cache.delete(cache.keys().next().value!);
        // A wake happened once: later hits are plain routes, not wakes again (machine_woken
        // logged and counted for every session opened within the TTL).
        const kept: Resolution = r.ok && r.woke ? { ok: true, backend: r.backend } : r;
        cache.set(id, { at: now(), r: kept });
      }
      return r;
    });
    inflight.set(id, p);
    return p;
  };
  resolve.invalidate = (id) => {
    cache.delete(id);
    inner.invalidate?.(id);
  };
  return resolve;
}

/** Refills a token bucket to time `t`; returns the tokens now held. */
function refill(b: { tokens: number; at: number }, t: number, perSecond: number, burst: number) {
  b.tokens = Math.min(burst, b.tokens + (Math.max(0, t - b.at) / 1000) * perSecond);
  b.at = t;
  return b.tokens;
}
