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

/** Per-source failure memory: how long the next attempt from there must wait. */
export interface AuthThrottle {
  /** Milliseconds the next attempt from `source` is held before it is checked. */
  delayFor(source: string): number;
  failed(source: string): void;
  succeeded(source: string): void;
}

/**
 * Delay after n failures: base·2^(n-1), capped. Entries expire after
 * `forgetMs` quiet time; the table is bounded so a flood of sources can't
 * grow it without limit (oldest forgotten first).
 */
export function createAuthThrottle(
  { baseMs = 250, maxMs = 8_000, forgetMs = 10 * 60_000, maxSources = 10_000, now = Date.now } = {},
): AuthThrottle {
  const table = new Map<string, { failures: number; last: number }>();
  const entry = (source: string) => {
    const e = table.get(source);
    if (e && now() - e.last > forgetMs) {
      table.delete(source);
      return undefined;
    }
    return e;
  };
  return {
    delayFor(source) {
      const e = entry(source);
      return e ? Math.min(maxMs, baseMs * 2 ** (e.failures - 1)) : 0;
    },
    failed(source) {
      const e = entry(source);
      table.delete(source); // re-insert: Map order is our LRU order
      table.set(source, { failures: (e?.failures ?? 0) + 1, last: now() });
      if (table.size > maxSources) table.delete(table.keys().next().value!);
    },
    succeeded(source) {
      table.delete(source);
    },
  };
}
