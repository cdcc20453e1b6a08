/**
 * Access-token checks, and how wrong guesses are slowed without ever keeping
 * the right token out.
 *
 * Why not a queue per source address: behind vault-proxy every client has the
 * proxy's address (behind a shared NAT too), so a per-source queue of a few
 * attempts let four guessing connections lock every legitimate user out.
 *
 * The design, and why each part is safe:
 *
 * - Every attempt is checked at once, in constant time (SHA-256 digests
 *   compared with `timingSafeEqual`). Nothing waits behind anything.
 * - A correct token is accepted immediately, whatever has failed before. A
 *   success does not reset any failure count: the source may be shared with
 *   the guesser, and a reset would hand it fresh fast guesses.
 * - A wrong token is answered only after a delay that grows with recent
 *   failures — per source, and machine-wide (a quarter as fast), so spreading
 *   guesses over many addresses does not keep them fast. Failures decay with
 *   a half-life, so a machine forgets an attack once it stops.
 * - The connection carries one attempt and is closed after the verdict (the
 *   server enforces one control stream per connection), so each guess costs a
 *   full QUIC handshake.
 * - A verdict for a connection that has gone is dropped: its timer is cleared
 *   and its promise settles as `dropped`; nothing stays queued for a client
 *   that left.
 *
 * What the delay does not do, said plainly: since a correct token is accepted
 * at once, a guesser that waits one round trip and sees no `auth_ok` knows
 * its guess was wrong without waiting for the verdict. Any fast "busy" or
 * early close for a wrong guess tells it no more than that, so closing a
 * connection whose verdict is pending leaks nothing new — which is why init
 * may evict such connections when its table of unauthenticated connections
 * is full (see `server.ts`). The delay slows clients that wait for the verdict
 * and holds their connection; the rate of an impatient guesser is bounded by
 * the handshake (one attempt per connection, a bounded number of
 * unauthenticated connections, the proxy's per-machine rate of new sessions).
 * What makes guessing hopeless is the token's length: `openssl rand -base64 32`
 * gives 256 random bits, and `tenant create` refuses any token shorter than 32
 * characters — even 10⁴ guesses a second for a century is under 2⁴⁵ guesses.
 *
 * @module
 */
import { createHash, timingSafeEqual } from "node:crypto";

function digest(text: string): Uint8Array {
  return createHash("sha256").update(text, "utf8").digest();
}

/** Compares two tokens without leaking, through timing, where they differ or their lengths. */
export function tokensEqual(expected: string, given: string): boolean {
  return timingSafeEqual(digest(expected), digest(given));
}

/** What one authentication attempt came to. */
export type AuthOutcome =
  | { ok: true; delayedMs: 0 }
  | { ok: false; delayedMs: number }
  /** The client went before its verdict was due: nothing is sent. */
  | { ok: false; dropped: true };

/** Failure memory and delayed verdicts. */
export interface AuthThrottle {
  /** Milliseconds a wrong attempt from `source` would wait now for its verdict. */
  delayFor(source: string): number;
  /**
   * Checks at once: a correct token resolves immediately; a wrong one after
   * its delay, or as `dropped` as soon as `signal` aborts (the client went).
   */
  attempt(source: string, check: () => boolean, signal?: AbortSignal): Promise<AuthOutcome>;
  /** Wrong verdicts waiting for their delay (each holds one timer). */
  pending(): number;
}

/**
 * Delay for a wrong token: none for the first, then base·2^(n-1), capped, where n is the larger of the
 * source's recent failures and a quarter of the machine's. Failure scores
 * halve every `halfLifeMs`; the per-source table is bounded so a flood of
 * sources can't grow it without limit (least recently failed forgotten first).
 */
export function createAuthThrottle(
  {
    baseMs = 250,
    maxMs = 8_000,
    halfLifeMs = 60_000,
    machineShare = 4,
    maxSources = 10_000,
    now = Date.now,
  } = {},
): AuthThrottle {
  type Score = { score: number; at: number };
  const sources = new Map<string, Score>();
  const machine: Score = { score: 0, at: now() };
  let waiting = 0;
  const decayed = (s: Score) => s.score * 0.5 ** ((now() - s.at) / halfLifeMs);
  const sourceScore = (source: string) => {
    const s = sources.get(source);
    return s ? decayed(s) : 0;
  };
  const delayFor = (source: string) => {
    const n = Math.max(sourceScore(source), decayed(machine) / machineShare);
    // Scores decay continuously; a failure counts fully until half of it is forgotten.
    // The first wrong token is answered at once (a typo costs nothing), then base·2^(n-1).
    const level = Math.round(n);
    return level === 0 ? 0 : Math.min(maxMs, baseMs * 2 ** (level - 1));
  };
  const fail = (source: string) => {
    const t = now();
    const next = { score: sourceScore(source) + 1, at: t };
    sources.delete(source); // re-insert: Map order is our LRU order
    sources.set(source, next);
    if (sources.size > maxSources) sources.delete(sources.keys().next().value!);
    machine.score = decayed(machine) + 1;
    machine.at = t;
  };
  return {
    delayFor,
    pending: () => waiting,
    attempt(source, check, signal) {
      if (check()) return Promise.resolve({ ok: true, delayedMs: 0 });
      const wait = delayFor(source);
      fail(source);
      if (signal?.aborted) return Promise.resolve({ ok: false, dropped: true });
      waiting++;
      return new Promise<AuthOutcome>((resolve) => {
        const settle = (outcome: AuthOutcome) => {
          waiting--;
          clearTimeout(timer);
          signal?.removeEventListener("abort", onAbort);
          resolve(outcome);
        };
        const onAbort = () => settle({ ok: false, dropped: true });
        const timer = setTimeout(() => settle({ ok: false, delayedMs: wait }), wait);
        signal?.addEventListener("abort", onAbort, { once: true });
      });
    },
  };
}
