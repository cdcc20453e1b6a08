/**
 * A session that comes back: when its connection is lost (laptop sleep,
 * Wi-Fi change, machine restart), the next stream reconnects — re-pinning,
 * or re-attesting when the machine has a new identity — and carries on.
 *
 * A dead path is noticed in seconds, not after QUIC's idle timeout: the
 * console pings through its stream, and {@link ReconnectingSession.watch}
 * pings the connection itself (heartbeat datagrams) for clients with only
 * forwards. While the path is silent, spare connections are dialed beside
 * the current one on a short fixed schedule — each a fresh handshake, since
 * a handshake's own retransmits back off to seconds — and the first that
 * connects becomes the connection every later stream uses.
 *
 * @module
 */
import { VaultError } from "../errors/mod.ts";
import type { ByteStream, StreamTag } from "../protocol/mod.ts";
import type { VaultSession } from "./connect.ts";

/** A fresh connection beside the current one. */
export interface Spare {
  session: VaultSession;
  open(tag: StreamTag): Promise<ByteStream>;
  /** Makes it the connection every later stream uses, closing the old one. */
  adopt(): void;
  /** Not needed after all. */
  discard(): Promise<void>;
}

/** Spares being dialed until one connects: `won` rejects on a non-network failure. */
export interface SpareRace {
  won: Promise<Spare>;
  stop(): void;
}

/** Heartbeat timing in ms: ping, silence that is reported, spare dials. */
export interface HeartbeatTiming {
  intervalMs: number;
  silenceMs: number;
  retryMs: number;
}

/** Every half second; two seconds of silence is a dead path; a spare every 400 ms. */
export const HEARTBEAT: HeartbeatTiming = { intervalMs: 500, silenceMs: 2000, retryMs: 400 };

/**
 * Spare dials in flight at once. Each gives up after its own connect timeout,
 * so this over the timeout is the steady rate of fresh handshakes.
 */
const MAX_SPARE_DIALS = 10;

/** Ping interval while the path is silent (5-byte datagrams). */
const SILENT_PING_MS = 100;

/** How long the old connection may take to answer once a spare got through. */
const OLD_GRACE_MS = 200;

/** True when `s`'s connection echoes a heartbeat within `ms` (false when it cannot ping). */
async function answers(s: VaultSession, ms: number): Promise<boolean> {
  if (!s.conn.ping) return false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<false>((r) => timer = setTimeout(() => r(false), ms));
  const closed = s.conn.closed.then(() => false as const);
  try {
    return await Promise.race([s.conn.ping().then(() => true), late, closed]);
  } finally {
    clearTimeout(timer);
  }
}

/** A session handle whose connection is replaced when lost. */
export interface ReconnectingSession {
  /** The current session. */
  readonly current: VaultSession;
  /** Opens a stream, reconnecting once first if the connection is gone. */
  openStream(tag: StreamTag): Promise<ByteStream>;
  /** Replaces the connection now; concurrent callers share one attempt. */
  reconnect(): Promise<VaultSession>;
  /**
   * Dials spares every `everyMs` until one connects (`won`) or `stop()`.
   * Network failures are passed to `onFailure` and retried; attestation and
   * authentication failures end the race (retrying would not help).
   */
  raceSpares(everyMs: number, onFailure: (why: string) => void): SpareRace;
  /**
   * Watches the path with heartbeat datagrams (for clients without a
   * console): reports silence, moves to a spare while silent, reports the
   * way back. Inactive on connections that cannot ping or whose peer does not
   * echo. Returns the function that stops it.
   */
  watch(opts: {
    name: string;
    onStatus: (line: string) => void;
    /** Progress for -v: when a connection first answers a heartbeat. */
    say?: (line: string) => void;
    timing?: HeartbeatTiming;
  }): () => void;
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
  const track = (s: VaultSession) => void s.conn.closed.then(() => s === current && (lost = true));
  track(first);
  let pending: Promise<VaultSession> | null = null;
  // While the watched path is silent, new streams wait for it to answer or for a spare.
  let quiet: { promise: Promise<void>; release(): void } | null = null;
  const hush = () => {
    let release!: () => void;
    const promise = new Promise<void>((r) => release = r);
    quiet ??= { promise, release };
  };
  const unhush = () => {
    quiet?.release();
    quiet = null;
  };
  const reconnect = () =>
    pending ??= (async () => {
      await current.close();
      const next = await connect();
      current = next;
      lost = false;
      track(next);
      return next;
    })().finally(() => pending = null);

  const spare = async (): Promise<Spare> => {
    const session = await connectSpare();
    if (closed) {
      await session.close();
      throw new Error("closed");
    }
    return {
      session,
      open: (tag) => session.openStream(tag),
      adopt() {
        const old = current;
        current = session;
        lost = false;
        track(session);
        if (old !== session) old.close().catch(() => {});
      },
      discard: () => session.close(),
    };
  };

  const raceSpares = (everyMs: number, onFailure: (why: string) => void): SpareRace => {
    let stopped = false;
    let inFlight = 0;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let win!: (s: Spare) => void;
    let fail!: (err: unknown) => void;
    const won = new Promise<Spare>((resolve, reject) => (win = resolve, fail = reject));
    won.catch(() => {});
    const stop = () => {
      stopped = true;
      clearTimeout(timer);
    };
    const attempt = () => {
      if (stopped || closed) return;
      if (inFlight < MAX_SPARE_DIALS) {
        inFlight++;
        spare().then(async (s) => {
          inFlight--;
          if (stopped) return void s.discard().catch(() => {});
          // A handshake just crossed the path, so it is back. The old connection carries
          // streams a new one cannot (forwarded connections in flight): if it answers within
          // a moment, keep it; its users hear it and stop the race.
          if (await answers(current, OLD_GRACE_MS)) return void s.discard().catch(() => {});
          if (stopped) return void s.discard().catch(() => {});
          stop();
          win(s);
        }, (err) => {
          inFlight--;
          if (stopped) return;
          if (err instanceof VaultError && /^(attest|auth)\./.test(err.code)) {
            stop();
            fail(err);
          } else onFailure((err as Error).message);
        });
      }
      timer = setTimeout(attempt, everyMs);
    };
    attempt();
    return { won, stop };
  };

  return {
    get current() {
      return current;
    },
    async openStream(tag) {
      if (quiet) await quiet.promise;
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
    raceSpares,
    watch({ name, onStatus, say, timing = HEARTBEAT }) {
      let heardFrom: VaultSession | null = null; // armed once this connection has echoed
      let lastHeard = performance.now();
      let silent = false;
      let race: SpareRace | null = null;
      let lastWhy = "";
      const heard = (s: VaultSession, sent: number) => {
        if (s !== current) return;
        if (heardFrom !== s) {
          say?.(`heartbeat answered by ${name} in ${Math.round(performance.now() - sent)} ms`);
        }
        heardFrom = s;
        lastHeard = performance.now();
        if (!silent) return;
        silent = false;
        race?.stop();
        race = null;
        unhush();
        onStatus(`${name} answers again`);
      };
      let watchdog: ReturnType<typeof setTimeout> | undefined;
      const tick = () => {
        const s = current;
        if (!s.conn.ping) return;
        const sent = performance.now();
        s.conn.ping().then(() => heard(s, sent));
        check();
      };
      const check = () => {
        clearTimeout(watchdog);
        if (heardFrom !== current || silent) return;
        const left = timing.silenceMs - (performance.now() - lastHeard);
        // Due before the next ping: look again right then, not up to a ping later.
        if (left > 0) {
          if (left < timing.intervalMs) watchdog = setTimeout(check, left);
          return;
        }
        silent = true;
        hush();
        const secs = Math.round(timing.silenceMs / 100) / 10;
        onStatus(`no reply from ${name} for ${secs}s — waiting`);
        race = raceSpares(timing.retryMs, (why) => {
          if (why !== lastWhy) onStatus(`reconnecting: ${lastWhy = why}`);
        });
        const mine = race;
        mine.won.then((next) => {
          if (race !== mine) return void next.discard().catch(() => {});
          race = null;
          silent = false;
          next.adopt();
          unhush();
          onStatus(`reconnected to ${name}`);
        }, (err) => {
          if (race !== mine) return;
          unhush(); // new streams fail on their own now, with the reason
          onStatus(`cannot reconnect: ${(err as Error).message}`);
        });
      };
      let timer: ReturnType<typeof setTimeout> | undefined;
      const pulse = () => {
        tick();
        // While silent, probe often: the first echo after the path returns ends the wait.
        timer = setTimeout(pulse, silent ? SILENT_PING_MS : timing.intervalMs);
      };
      pulse(); // armed within a round trip, not a ping interval
      return () => {
        clearTimeout(timer);
        clearTimeout(watchdog);
        race?.stop();
        unhush();
      };
    },
    close: () => {
      closed = true;
      unhush();
      return current.close();
    },
  };
}
