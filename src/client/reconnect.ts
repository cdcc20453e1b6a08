/**
 * A session that comes back: when its connection is lost (laptop sleep,
 * Wi-Fi change, machine restart), the next stream reconnects — re-pinning,
 * or re-attesting when the machine has a new identity — and carries on.
 *
 * A console that hears nothing on its path dials spares beside the current
 * connection ({@link ReconnectingSession.spare}) and moves to the first that
 * answers; every later stream (forwards too) then uses it.
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
  /**
   * Connects a new session without touching the current one: `adopt` makes it
   * current and closes the old connection, `discard` closes it.
   */
  spare(): Promise<{
    session: VaultSession;
    openStream(tag: StreamTag): Promise<ByteStream>;
    adopt(): void;
    discard(): Promise<void>;
  }>;
  close(): Promise<void>;
}

/**
 * Wraps `first`; `connect` makes a new session (same vault, same flags);
 * `connectSpare` (default `connect`) makes spares, which must not wait long.
 */
export function reconnecting(
  first: VaultSession,
  connect: () => Promise<VaultSession>,
  connectSpare: () => Promise<VaultSession> = connect,
): ReconnectingSession {
  let current = first;
  let lost = false;
  let closed = false;
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
    async spare() {
      const session = await connectSpare();
      if (closed) {
        await session.close();
        throw new Error("closed");
      }
      return {
        session,
        openStream: (tag: StreamTag) => session.openStream(tag),
        adopt() {
          const old = current;
          current = session;
          lost = false;
          watch(session);
          if (old !== session) old.close().catch(() => {});
        },
        discard: () => session.close(),
      };
    },
    close: () => {
      closed = true;
      return current.close();
    },
  };
}
