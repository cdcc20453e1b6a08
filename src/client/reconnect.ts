/**
 * A session that comes back: when its connection is lost (laptop sleep,
 * Wi-Fi change, machine restart), the next stream reconnects — re-pinning,
 * or re-attesting when the machine has a new identity — and carries on.
 *
 * @module
 */
import type { ByteStream, StreamTag } from "../protocol/mod.ts";
import type { VaultSession } from "./connect.ts";

/** A session handle whose connection is replaced when lost. */
export interface ReconnectingSession {
  /** The current session. */
  readonly current: VaultSession;
  /** Opens a stream, reconnecting once first if the connection is gone. */
  openStream(tag: StreamTag): Promise<ByteStream>;
  /** Replaces the connection now; concurrent callers share one attempt. */
  reconnect(): Promise<VaultSession>;
  close(): Promise<void>;
}

/** Wraps `first`; `connect` makes a new session (same vault, same flags). */
export function reconnecting(
  first: VaultSession,
  connect: () => Promise<VaultSession>,
): ReconnectingSession {
  let current = first;
  let lost = false;
  const watch = (s: VaultSession) => void s.conn.closed.then(() => s === current && (lost = true));
  watch(first);
  let pending: Promise<VaultSession> | null = null;
  const reconnect = () =>
    pending ??= (async () => {
      await current.close();
      const next = await connect();
      current = next;
      lost = false;
      watch(next);
      return next;
    })().finally(() => pending = null);
  return {
    get current() {
      return current;
    },
    async openStream(tag) {
      if (!lost) {
        try {
          return await current.openStream(tag);
        } catch {
          // fall through: the connection died under us
        }
      }
      return await (await reconnect()).openStream(tag);
    },
    reconnect,
    close: () => current.close(),
  };
}
