/**
 * Scale to zero: a vault with no authenticated client connection for its
 * idle time suspends its own machine through Fly's API socket (`POST
 * http://flaps/v1/apps/$FLY_APP_NAME/machines/$FLY_MACHINE_ID/suspend`, no
 * API token: the socket speaks for this machine only). Fly keeps the
 * machine's memory, so consoles, shells and running programs carry on
 * where they were when it is started again (by vault-proxy on a client's
 * connect, or `fly-vault wake`).
 *
 * Only authenticated connections count: a console, exec, copy or forward
 * runs on one, and a client's persistent master holds one while it
 * lingers. A stranger's handshake or a running workload does not keep the
 * vault awake (a suspended workload resumes with it).
 *
 * Setting: env `FLY_VAULT_IDLE_SUSPEND`: a duration (`15m` default, `90s`,
 * `2h`, `500ms`; a bare number is seconds), or `off` to never suspend.
 *
 * @module
 */
import { printable, VaultError } from "../errors/mod.ts";

/** The idle time when `FLY_VAULT_IDLE_SUSPEND` is not set. */
export const DEFAULT_IDLE_SUSPEND_MS = 15 * 60_000;

/** `FLY_VAULT_IDLE_SUSPEND` as milliseconds; 0 means never suspend. */
export function parseIdleSuspend(raw: string | undefined): number {
  if (raw === undefined || raw.trim() === "") return DEFAULT_IDLE_SUSPEND_MS;
  const v = raw.trim().toLowerCase();
  if (["off", "no", "false", "never", "0"].includes(v)) return 0;
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)?$/.exec(v);
  const ms = m
    ? Math.round(
      Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[(m[2] ?? "s") as "s"],
    )
    : NaN;
  if (!(ms >= 100)) {
    throw new VaultError(
      "init.bad_config",
      `FLY_VAULT_IDLE_SUSPEND=${raw} is not an idle time`,
      'write a duration such as "15m", "90s" or "2h", or "off" to never suspend',
    );
  }
  return ms;
}

/** Counts authenticated connections; suspends the machine once none has been open for the idle time. */
export interface IdleSuspender {
  /** An authenticated connection opened; call the returned function when it closes. */
  connected(): () => void;
  /** Connections open now. */
  readonly active: number;
  /** Stops the timer (server closing). */
  close(): void;
}

/** Options of {@link createIdleSuspender}. */
export interface IdleSuspenderOptions {
  idleMs: number;
  /** Asks Fly to suspend this machine; resolves once the machine runs again (or the ask failed). */
  suspend: () => Promise<void>;
  log: (event: string, fields?: Record<string, unknown>) => void;
}

/** Starts counting; the idle time runs from now (a machine nobody reaches after boot suspends too). */
export function createIdleSuspender(opts: IdleSuspenderOptions): IdleSuspender {
  let active = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let suspending = false;
  let closed = false;
  let idleSince = Date.now();
  let armedAt = 0;

  const arm = () => {
    if (closed || suspending || active > 0 || timer !== undefined) return;
    armedAt = Date.now();
    timer = setTimeout(fire, opts.idleMs);
  };
  const disarm = () => {
    if (timer !== undefined) clearTimeout(timer);
    timer = undefined;
  };
  const fire = async () => {
    timer = undefined;
    if (closed || active > 0) return;
    // A timer firing long after it was due means this machine was frozen (suspended, however
    // the suspend was asked): it has just resumed, and whoever woke it has not connected yet.
    // Give them a whole idle time rather than suspend again at once.
    const late = Date.now() - armedAt - opts.idleMs;
    if (late > Math.max(2_000, opts.idleMs / 10)) {
      opts.log("idle.resumed", { late_ms: late });
      idleSince = Date.now();
      arm();
      return;
    }
    suspending = true;
    const asked = Date.now();
    opts.log("idle.suspend", { idle_ms: asked - idleSince });
    try {
      await opts.suspend();
      // Reached once the machine runs again: the request's reply waited out the suspension.
      opts.log("idle.resumed", { suspended_ms: Date.now() - asked });
    } catch (err) {
      opts.log("idle.suspend_failed", { error: String((err as Error)?.message ?? err) });
    } finally {
      suspending = false;
      idleSince = Date.now();
      arm();
    }
  };
  arm();
  return {
    connected() {
      active++;
      disarm();
      let done = false;
      return () => {
        if (done) return;
        done = true;
        active--;
        if (active === 0) {
          idleSince = Date.now();
          arm();
        }
      };
    },
    get active() {
      return active;
    },
    close() {
      closed = true;
      disarm();
    },
  };
}

/**
 * Suspends this machine through Fly's API socket. The reply may arrive only
 * after the machine is resumed (its memory, this request included, was
 * frozen), so the timeout is two-stage: a timer that fires late after a
 * resume gives the reply a moment to be read before giving up.
 */
export function socketSuspend(
  opts: { socketPath: string; app: string; machineId: string; timeoutMs?: number },
): () => Promise<void> {
  const url = `http://flaps/v1/apps/${encodeURIComponent(opts.app)}/machines/${
    encodeURIComponent(opts.machineId)
  }/suspend`;
  return async () => {
    const client = Deno.createHttpClient({ proxy: { transport: "unix", path: opts.socketPath } });
    const abort = new AbortController();
    let grace: ReturnType<typeof setTimeout> | undefined;
    const first = setTimeout(() => {
      grace = setTimeout(() => abort.abort(), 2_000);
    }, opts.timeoutMs ?? 60_000);
    try {
      const res = await fetch(url, { method: "POST", client, signal: abort.signal });
      // The reply is read only so far: its body is not ours to trust (nor to hold in full).
      const body = await readSome(res, REPLY_BYTES);
      if (!res.ok) {
        throw new VaultError(
          "init.suspend_refused",
          `the API socket answered ${res.status} to suspend: ${
            printable(body.trim(), { maxLength: 200 })
          }`,
          "the machine stays up; it asks again after the next idle time",
        );
      }
    } finally {
      clearTimeout(first);
      if (grace !== undefined) clearTimeout(grace);
      client.close();
    }
  };
}

/** Bytes of the API socket's reply read at most (the rest is cancelled). */
const REPLY_BYTES = 4096;

/** Up to `max` bytes of `res`'s body as text; the rest is cancelled, never read. */
async function readSome(res: Response, max: number): Promise<string> {
  if (!res.body) return "";
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let n = 0;
  try {
    while (n < max) {
      const { value, done } = await reader.read();
      if (done) break;
      chunks.push(value.subarray(0, max - n));
      n += value.length;
    }
  } finally {
    await reader.cancel().catch(() => {});
  }
  const all = new Uint8Array(chunks.reduce((a, c) => a + c.length, 0));
  let o = 0;
  for (const c of chunks) {
    all.set(c, o);
    o += c.length;
  }
  return new TextDecoder().decode(all);
}
