/**
 * Exec ids (issue 10 item 2): a client through its master sends each exec
 * with a random id, and when that stream fails before the command started it
 * sends the same request again on its own connection. Init runs an id at most
 * once: the second arrival is refused, so a command forwarded on a slow path
 * and retried is never run twice. Bounded: the last {@link MAX_IDS} ids, each
 * for {@link ID_TTL_MS} (a retry follows its first try within seconds).
 *
 * @module
 */

/** How many recent ids are remembered. */
export const MAX_IDS = 1024;
/** How long an id is remembered. */
export const ID_TTL_MS = 10 * 60_000;

/** A bounded memory of exec ids seen. */
export interface ExecIds {
  /** True the first time `id` is claimed (the command may run), false after. */
  claim(id: string, now?: number): boolean;
}

/** A fresh memory (init keeps one for its life: a restarted init never saw the first try). */
export function createExecIds(max = MAX_IDS, ttlMs = ID_TTL_MS): ExecIds {
  // Insertion order is claim order: the oldest entries are first.
  const seen = new Map<string, number>();
  return {
    claim(id, now = Date.now()) {
      for (const [old, at] of seen) {
        if (now - at <= ttlMs) break;
        seen.delete(old);
      }
      if (seen.has(id)) return false;
      if (seen.size >= max) seen.delete(seen.keys().next().value!);
      seen.set(id, now);
      return true;
    },
  };
}

/** Init's memory of exec ids. */
export const execIds: ExecIds = createExecIds();
