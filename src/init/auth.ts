/**
 * Access-token checks: digests compared in constant time, and failures
 * slowed per source address with a growing delay, so guessing over the
 * network is slow and a wrong token never reveals how close it was.
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
export type AuthOutcome = { ok: boolean; delayedMs: number } | { busy: true };

/**
 * Per-source failure memory. Attempts from one source run one after another
 * — each waits for the previous verdict, then for its own delay — so opening
 * many streams or connections at once buys no parallel guesses.
 */
export interface AuthThrottle {
  /** Milliseconds the next attempt from `source` would be held before it is checked. */
  delayFor(source: string): number;
  /** Runs `check` in turn for `source`, after its delay; `busy` when too many are queued. */
  attempt(source: string, check: () => boolean): Promise<AuthOutcome>;
}

/**
 * Delay after n failures: base·2^(n-1), capped. Entries expire after
 * `forgetMs` quiet time; the table is bounded so a flood of sources can't
 * grow it without limit (oldest forgotten first).
 */
export function createAuthThrottle(
  {
    baseMs = 250,
    maxMs = 8_000,
    forgetMs = 10 * 60_000,
    maxSources = 10_000,
    maxPending = 4,
    now = Date.now,
  } = {},
): AuthThrottle {
  const table = new Map<string, { failures: number; last: number }>();
  const queues = new Map<string, { tail: Promise<unknown>; pending: number }>();
  const entry = (source: string) => {
    const e = table.get(source);
    if (e && now() - e.last > forgetMs) {
      table.delete(source);
      return undefined;
    }
    return e;
  };
  const delayFor = (source: string) => {
    const e = entry(source);
    return e ? Math.min(maxMs, baseMs * 2 ** (e.failures - 1)) : 0;
  };
  const record = (source: string, ok: boolean) => {
    if (ok) return void table.delete(source);
    const e = entry(source);
    table.delete(source); // re-insert: Map order is our LRU order
    table.set(source, { failures: (e?.failures ?? 0) + 1, last: now() });
    if (table.size > maxSources) table.delete(table.keys().next().value!);
  };
  return {
    delayFor,
    attempt(source, check) {
      const queue = queues.get(source) ?? { tail: Promise.resolve(), pending: 0 };
      if (queue.pending >= maxPending) return Promise.resolve({ busy: true } as const);
      queue.pending++;
      queues.set(source, queue);
      const run = queue.tail.then(async () => {
        const wait = delayFor(source);
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        const ok = check();
        record(source, ok);
        return { ok, delayedMs: wait };
      });
      queue.tail = run.finally(() => {
        if (--queue.pending === 0 && queues.get(source) === queue) queues.delete(source);
      });
      return run;
    },
  };
}
