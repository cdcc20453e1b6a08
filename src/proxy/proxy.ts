/**
 * The relay: one public UDP socket; per client address, a session with its
 * own upstream socket to the machine named by the SNI of the client's
 * Initial. Packets are relayed as they are (no TLS termination, DESIGN §7).
 *
 * A new client address is "pending" until its ClientHello is whole and its
 * machine resolved; its datagrams are buffered (bounded) and sent upstream,
 * in order, once the session exists. What cannot be routed is dropped and
 * counted; a client whose Initial was readable but unroutable gets an Initial
 * CONNECTION_CLOSE so it fails at once.
 *
 * Flood policy (issue 14). Anyone who knows a machine id can send well-formed Initials from
 * many addresses, so every table is bounded and no bound lets one party lock others out:
 *
 * - Pending clients (ClientHello incomplete): at most `maxPendingPerSource` (8) per address,
 *   `maxPendingPerPrefix` (500) per /24 or /56, `maxPending` (2,000) and `maxPendingBytes`
 *   (32 MiB; datagrams plus reassembly buffers, each entry charged as it grows) in all, each
 *   forgotten after `pendingTimeoutMs` (3 s). When the table or the byte budget is full, a
 *   newcomer evicts the OLDEST entry of the prefix holding the MOST entries. A flood therefore
 *   evicts itself: a new client from another network holds one entry, which is never chosen
 *   while any flooding prefix holds more, and a real client's ClientHello completes within a
 *   round trip (usually one datagram), long before it could age out.
 * - Sessions: each is one upstream socket (one file descriptor), so `maxSessions` is lowered to
 *   {@link sessionBudget} of the process's open-file limit, with headroom for the rest of the
 *   process. Per address `maxSessionsPerSource` (64), per /24 or /56 `maxSessionsPerPrefix`
 *   (512): one network cannot take the table. A socket that still cannot be opened (EMFILE,
 *   ENOBUFS...) refuses that client ("exhausted"); the proxy keeps serving.
 * - Machines: new sessions to one machine are a token bucket (`machineSessionsPerSecond` 10,
 *   burst 40); beyond, new clients are refused ("machine_rate") and existing sessions carry on.
 *   A session whose client never answers the machine's first flight (sends only Initials) is
 *   closed after `handshakeTimeoutMs` (10 s). So a handshake flood reaches a machine at 10
 *   handshakes a second, not at the attacker's rate, and init's memory stays bounded. A client
 *   can fake that answer (a Handshake packet's type bits are clear text), so a session whose
 *   machine has sent nothing for `idleTimeoutMs` is closed too, whatever its client sends: only
 *   a connection the machine keeps alive keeps its socket.
 * - Machine lookups in flight: `maxResolving` (64), so random machine ids cannot open
 *   unbounded Machines API or DNS requests (file descriptors again).
 * - Logs: refusals and session open/close are logged at most 20 a second, the rest counted in
 *   the next line's `suppressed`; every refusal is counted in `vault_proxy_refusals_total`.
 *
 * Sessions that follow the client (issue 11.2). The machine's connection IDs are in clear in the
 * SCID of its long-header packets (Initial, Handshake); the proxy learns them per session (the
 * first 8 of 4 bytes or more, first come keeps a CID, forgotten with the session). A datagram
 * from an unknown address whose DCID is one of them (a short header read at each learned CID
 * length, the fixed bit not required: quinn greases it) moves that session to the new address:
 * NAT rebinding or a network change costs nothing. No other packet from a new address touches a
 * session. quinn clients keep their DCID when their address changes under them (they rotate only
 * on an explicit rebind, which Deno does not expose); a client that switched to a CID announced
 * later in an encrypted NEW_CONNECTION_ID frame would not be found (its packets from the old
 * address still are).
 *
 * Routes that follow the machine (issue 11.5). A handshake the machine has not answered in
 * `noAnswerMs` (1 s) is looked up again at once (the cached answer dropped): a machine restarted
 * at a new address gets the client's first Initials replayed to it there (≤ 16 KiB kept until the
 * machine answers); one found stopped or suspended is woken by a waking resolver (the wait is the
 * client's slower connect) or refused with an Initial CONNECTION_CLOSE saying so; a failed wake
 * is a CONNECTION_CLOSE naming why. While a machine wakes, its client's datagrams wait in the
 * pending table under the bounds above.
 *
 * Peers (issue 11.4, see peers.ts): with `peers`, each proxy announces the client addresses and
 * machine CIDs it holds; a packet for one of them that lands on another proxy is forwarded to the
 * holder (one hop, never again), which relays it and answers the client from its own socket.
 *
 * @module
 */
import { VaultError } from "../errors/mod.ts";
import {
  type AssemblyLimits,
  buildInitialClose,
  CryptoAssembler,
  DEFAULT_ASSEMBLY_LIMITS,
  type DropReason,
  parseLongHeader,
  readClientInitials,
  splitDatagram,
  TransportError,
} from "./initial.ts";
import { bump, createMetrics, newStats, type ProxyMetrics, type ProxyStats } from "./metrics.ts";
import { type Backend, machineIdFromSni, type Resolution, type Resolver } from "./resolver.ts";
import { bindUdp, type UdpImpl, type UdpSocket } from "./udp.ts";
import { decodePeer, encodePeer, type PeerMessage } from "./peers.ts";

/** Bounds that keep the proxy's memory, file descriptors and work finite whatever arrives. */
export interface ProxyLimits {
  /**
   * Sessions at once; a client beyond is refused ("full"). Each session holds one upstream
   * socket, so the proxy lowers this below its open-file limit ({@link sessionBudget}).
   */
  maxSessions: number;
  /** Sessions at once from one source address ("source_full"). */
  maxSessionsPerSource: number;
  /** Sessions at once from one source prefix, /24 or /56 ("prefix_full"). */
  maxSessionsPerPrefix: number;
  /** New sessions per second to one machine, sustained ("machine_rate"). */
  machineSessionsPerSecond: number;
  /** Burst allowance for the above. */
  machineSessionBurst: number;
  /**
   * A session whose client has sent nothing but Initial packets (it never answered the
   * machine's handshake) is closed after this long ("handshake_timeout").
   */
  handshakeTimeoutMs: number;
  /** Clients pending (ClientHello incomplete or being resolved) at once. */
  maxPending: number;
  /** Bytes the pending clients may hold in all (datagrams and reassembly buffers). */
  maxPendingBytes: number;
  /** Pending clients from one source address; beyond, its new ones are dropped. */
  maxPendingPerSource: number;
  /** Pending clients from one source prefix; beyond, the prefix's oldest is evicted. */
  maxPendingPerPrefix: number;
  /** Machine lookups in flight at once ("resolve_busy" beyond). */
  maxResolving: number;
  /**
   * Longest one machine lookup (a wake included) may take; beyond, its client is refused
   * ("resolve_timeout") and its slot among `maxResolving` is free again. Without it, lookups
   * that never settle (a DNS or API server that accepts and never answers) would hold every
   * slot and refuse every new client for good.
   */
  resolveTimeoutMs: number;
  /**
   * A session with no datagram either way for this long is closed; so is one whose machine has
   * sent nothing for this long, whatever its client sends ("machine_silent").
   */
  idleTimeoutMs: number;
  /** A pending client that has not completed its ClientHello in this time is forgotten. */
  pendingTimeoutMs: number;
  /** Initial datagrams per second per source IP from clients without a session. */
  initialsPerSecond: number;
  /** Burst allowance for the above. */
  initialBurst: number;
  /** CRYPTO bytes and Initial packets buffered per pending client. */
  assembly: AssemblyLimits;
  /**
   * A session whose client sent an Initial and got nothing back from the machine for this long
   * is routed again at once (the machine may have moved, stopped or been suspended).
   */
  noAnswerMs: number;
}

/** Defaults: generous for people, tight for floods (the module JSDoc says why). */
export const DEFAULT_LIMITS: ProxyLimits = {
  maxSessions: 20_000,
  maxSessionsPerSource: 64,
  maxSessionsPerPrefix: 512,
  machineSessionsPerSecond: 10,
  machineSessionBurst: 40,
  handshakeTimeoutMs: 10_000,
  maxPending: 2_000,
  maxPendingBytes: 32 * 1024 * 1024,
  maxPendingPerSource: 8,
  maxPendingPerPrefix: 500,
  maxResolving: 64,
  // Above the Machines API resolver's own worst case (read 3 s, start and wait 30 s each).
  resolveTimeoutMs: 90_000,
  // Above init's 60 s server idle timeout, so QUIC, not the proxy, decides when a path is dead.
  idleTimeoutMs: 120_000,
  pendingTimeoutMs: 3_000,
  initialsPerSecond: 20,
  // Above the 80 packets a 64 KiB ClientHello may take, so one large ClientHello is never
  // rate-limited into retransmits.
  initialBurst: 100,
  assembly: DEFAULT_ASSEMBLY_LIMITS,
  // Below quinn's first Initial retransmit (~1 s), so a client's retransmit finds the new route.
  noAnswerMs: 1_000,
};

/**
 * Sessions the proxy may hold under an open-file limit of `nofile`: each session is one
 * upstream socket, and the rest of the process (Deno's runtime, the public socket, the admin
 * server's connections, Machines API and DNS lookups, logs) needs the remainder. The reserve is
 * large on purpose: Deno 2.9 can panic, not throw, when a file descriptor cannot be had (seen on
 * an HTTP accept at the limit), so the proxy must stay well clear of the limit, not catch it.
 */
export function sessionBudget(nofile: number): number {
  const reserve = Math.min(Math.floor(nofile / 2), Math.max(96, Math.floor(nofile / 8)));
  return Math.max(0, nofile - reserve);
}

/** The soft open-file limit of this process (Linux `/proc/self/limits`), or undefined. */
export function openFileLimit(): number | undefined {
  try {
    const text = Deno.readTextFileSync("/proc/self/limits");
    const m = text.match(/^Max open files\s+(\d+|unlimited)/m);
    if (!m || m[1] === "unlimited") return undefined;
    return Number(m[1]);
  } catch {
    return undefined;
  }
}

/** The prefix a source address is bounded by: /24 for IPv4 (and v4-mapped), /56 for IPv6. */
export function sourcePrefix(host: string): string {
  const v4 = host.startsWith("::ffff:") && host.includes(".") ? host.slice(7) : host;
  if (!v4.includes(":")) return v4.slice(0, v4.lastIndexOf(".")) + ".0/24";
  // Expand "::" so the first 56 bits are the first three groups and the high byte of the fourth.
  const [head, tail = ""] = v4.split("::");
  const h = head ? head.split(":") : [];
  const t = v4.includes("::") && tail ? tail.split(":") : [];
  const groups = v4.includes("::") ? [...h, ...Array(8 - h.length - t.length).fill("0"), ...t] : h;
  const g = groups.map((x) => parseInt(x || "0", 16) || 0);
  return `${g.slice(0, 3).map((x) => x.toString(16)).join(":")}:${
    ((g[3] ?? 0) & 0xff00).toString(16)
  }::/56`;
}

/** One structured log event. */
export type LogEvent = Record<string, unknown> & { event: string };

/** Options of {@link startProxy}. */
export interface ProxyOptions {
  listen: { hostname: string; port: number };
  resolver: Resolver;
  udp?: UdpImpl;
  limits?: Partial<ProxyLimits>;
  log?: (e: LogEvent) => void;
  /**
   * Other proxies in front of the same machines (see peers.ts): each tells the others which
   * clients it holds, and forwards them the packets of those clients that land on it.
   */
  peers?: {
    /** This proxy's peer socket (a private address: on Fly, its 6PN address). */
    listen: { hostname: string; port: number };
    /** The other proxies' peer sockets. */
    addresses: { hostname: string; port: number }[];
    /** Shared by all peers; signs every peer message. */
    secret: Uint8Array;
  };
  /** Called on every drop (after counting); tests wait on it. */
  onDrop?: (reason: string) => void;
  now?: () => number;
}

/** A running proxy. */
export interface Proxy {
  hostname: string;
  port: number;
  stats: ProxyStats;
  metrics: ProxyMetrics;
  /** The limits in force (maxSessions lowered to fit the open-file limit). */
  limits: ProxyLimits;
  /** The peer socket's port, when peers are configured. */
  peerPort?: number;
  /** Stops receiving, closes every session. */
  close(): Promise<void>;
}

interface Session {
  key: string;
  clientHost: string;
  clientPort: number;
  prefix: string;
  backend: Backend;
  up: UdpSocket;
  opened: number;
  lastSeen: number;
  /**
   * The machine's last datagram (or the session's opening). A client alone cannot keep a session
   * (an upstream socket) open: a live QUIC connection always has the machine talking too.
   */
  lastFromMachine: number;
  machineId: string;
  /** The client sent something beyond Initials: it answered the machine's first flight. */
  confirmed: boolean;
  /** The client's original DCID and SCID: an Initial CONNECTION_CLOSE needs them. */
  dcid: Uint8Array;
  scid: Uint8Array;
  /** The machine's connection IDs seen in clear (SCIDs of its long-header packets), hex. */
  cids: string[];
  /** The machine has sent at least one datagram. */
  answered: boolean;
  /** When the first client datagram since the machine last spoke was relayed (0: none). */
  waitingSince: number;
  /** Among those unanswered datagrams was an Initial: a handshake is waiting. */
  initialWaiting: boolean;
  /** The client's first Initial datagrams, replayed to a new route; dropped once answered. */
  replay: Uint8Array[] | undefined;
  rerouting: boolean;
  lastReroute: number;
  closed: boolean;
}

interface Pending {
  key: string;
  host: string;
  prefix: string;
  dcid: Uint8Array;
  scid: Uint8Array;
  asm: CryptoAssembler;
  buffered: Uint8Array[];
  /** What this entry counts against maxPendingBytes. */
  bytes: number;
  started: number;
  resolving: boolean;
  done: boolean;
}

/** A client another proxy holds (it told us): its packets that land here go to that proxy. */
interface Remote {
  key: string;
  /** The holder's peer socket (where its announcement came from). */
  peer: { hostname: string; port: number };
  sender: string;
  /** The sender's time on the "open" that made this entry: older control messages are replays. */
  openedAt: number;
  cids: string[];
  seen: number;
}

/**
 * Server connection IDs remembered per session, the first seen (quinn's handshake uses one), and
 * never replaced: each new one is an announcement to every peer.
 */
const MAX_CIDS_PER_SESSION = 8;
/** Shorter machine CIDs are not learned (quinn's are 8 bytes; RFC 9000 allows 0 to 20). */
const MIN_LEARNED_CID = 4;
/** Bytes of a session's first Initials kept to replay on a new route. */
const MAX_REPLAY_BYTES = 16 * 1024;

/** What an empty pending entry costs besides its buffers (objects, map slots, keys). */
const PENDING_OVERHEAD = 512;

/** Error codes that mean the machine is out of a resource: refuse the session, keep serving. */
const EXHAUSTION =
  /EMFILE|ENFILE|ENOBUFS|ENOMEM|Too many open files|No buffer space|Cannot allocate memory/i;

/** Starts a proxy. Resolves once the public socket is bound. */
export async function startProxy(opts: ProxyOptions): Promise<Proxy> {
  const limits: ProxyLimits = { ...DEFAULT_LIMITS, ...opts.limits };
  const nofile = openFileLimit();
  if (nofile !== undefined) {
    limits.maxSessions = Math.min(limits.maxSessions, sessionBudget(nofile));
  }
  const impl = opts.udp ?? "deno";
  const log = opts.log ??
    ((e) => console.log(JSON.stringify({ t: new Date().toISOString(), ...e })));
  const now = opts.now ?? Date.now;
  const stats = newStats();
  const metrics = createMetrics(stats);
  const sessions = new Map<string, Session>();
  /** Machine connection ID (hex) → session: a client's packets find it from any address. */
  const byCid = new Map<string, Session>();
  /** Lengths of the machine CIDs seen (quinn: 8), to read a short header's DCID. */
  const cidLengths = new Set<number>();
  /** Sessions whose client sent an Initial the machine has not answered yet. */
  const waiting = new Set<Session>();
  /** When each machine was last looked up afresh for an unanswered handshake. */
  const relooked = new Map<string, number>();
  /** Clients other proxies hold, by client address and by machine CID. */
  const remotes = new Map<string, Remote>();
  const remoteByCid = new Map<string, Remote>();
  const peerId = crypto.getRandomValues(new Uint8Array(8));
  const peerIdHex = toHex(peerId);
  let peerSock: UdpSocket | undefined;
  const sessionsBySource = new Map<string, number>();
  const sessionsByPrefix = new Map<string, number>();
  const pendings = new Map<string, Pending>();
  const pendingBySource = new Map<string, number>();
  /** Per prefix, its pending clients oldest first (Map keeps insertion order). */
  const pendingByPrefix = new Map<string, Map<string, Pending>>();
  let pendingBytes = 0;
  let resolving = 0;
  /** Lookups past their deadline that have not settled yet: bounded too (see lookup). */
  let abandoned = 0;
  const buckets = new Map<string, { tokens: number; at: number }>();
  const machineBuckets = new Map<string, { tokens: number; at: number }>();
  let closing = false;

  const onDrop = opts.onDrop;
  const drop = (reason: DropReason | string) => {
    bump(stats.drops, reason);
    onDrop?.(reason);
  };
  // Refusals are logged, but a flood must not turn into a flood of log lines: at most
  // REFUSAL_LOGS_PER_SECOND, the rest counted and reported with the next one logged.
  let logWindow = 0;
  let logged = 0;
  let suppressed = 0;
  const logRefusal = (e: LogEvent) => {
    const t = now();
    if (t - logWindow >= 1000) {
      logWindow = t;
      logged = 0;
    }
    if (++logged > REFUSAL_LOGS_PER_SECOND) {
      suppressed++;
      return;
    }
    log(suppressed ? { ...e, suppressed } : e);
    suppressed = 0;
  };

  let front: UdpSocket;
  try {
    front = await bindUdp(impl, opts.listen.hostname, opts.listen.port, onClient, {
      onError: (err) => internalError("proxy.recv", err),
    });
  } catch (err) {
    throw new VaultError(
      "proxy.listen",
      `cannot listen on ${opts.listen.hostname}:${opts.listen.port}: ${(err as Error).message}`,
      "choose another --listen address, or stop whatever holds that port",
    );
  }

  if (opts.peers) {
    try {
      peerSock = await bindUdp(impl, opts.peers.listen.hostname, opts.peers.listen.port, onPeer, {
        onError: (err) => internalError("proxy.peer_recv", err),
      });
    } catch (err) {
      front.close();
      throw new VaultError(
        "proxy.listen",
        `cannot listen for peers on ${opts.peers.listen.hostname}:${opts.peers.listen.port}: ${
          (err as Error).message
        }`,
        "choose another --peer-listen address",
      );
    }
  }

  function internalError(code: string, err: unknown) {
    bump(stats.errors, code);
    logRefusal({ event: "error", code, error: String(err) });
  }

  function onClient(data: Uint8Array, host: string, port: number) {
    const key = `${host}|${port}`;
    const s = sessions.get(key);
    if (s) return toMachine(s, data);
    if (closing) return;
    if (remotes.size > 0) {
      const r = remotes.get(key);
      if (r) return forwardToPeer(r, data, host, port);
    }
    const p = pendings.get(key);
    if (p) return onPendingPacket(p, data, host, port);
    // A connection the proxy knows, from a new address (NAT rebinding, a network change): its
    // DCID is one the machine chose for it, which only that connection's peers know.
    const known = sessionByDcid(data);
    if (known) {
      migrate(known, host, port, key);
      return toMachine(known, data);
    }
    const held = remoteByCid.size > 0 ? byDcid(remoteByCid, data) : undefined;
    if (held) return forwardToPeer(held, data, host, port);
    // A new client address. Cheap checks first: only a v1 long-header Initial can start a session.
    if (data.length === 0 || !(data[0] & 0x80)) {
      return drop(data.length < 7 ? "short" : "short_header");
    }
    if (!allowInitial(host)) return drop("rate");
    if ((pendingBySource.get(host) ?? 0) >= limits.maxPendingPerSource) {
      return drop("pending_source");
    }
    const r = readClientInitials(data);
    if (!r.ok) return drop(r.reason);
    const prefix = sourcePrefix(host);
    const fresh: Pending = {
      key,
      host,
      prefix,
      dcid: r.value.dcid,
      scid: r.value.scid,
      asm: new CryptoAssembler(limits.assembly),
      buffered: [],
      bytes: PENDING_OVERHEAD,
      started: now(),
      resolving: false,
      done: false,
    };
    // Room for the newcomer: a prefix at its quota gives up its own oldest; a full table gives
    // up the oldest entry of the heaviest prefix, so a flood evicts itself, not other people.
    const own = pendingByPrefix.get(prefix);
    if (own && own.size >= limits.maxPendingPerPrefix) evict(own.values().next().value!);
    while (
      pendings.size > 0 &&
      (pendings.size >= limits.maxPending ||
        pendingBytes + fresh.bytes + data.length > limits.maxPendingBytes)
    ) evict(heaviest());
    addPending(fresh);
    onFrames(fresh, r.value.frames, data, host, port);
  }

  function toMachine(s: Session, data: Uint8Array) {
    const t = now();
    s.lastSeen = t;
    if (!s.confirmed && answersHandshake(data)) s.confirmed = true;
    if (s.waitingSince === 0) s.waitingSince = t;
    if (!s.initialWaiting && (data[0] & 0xf0) === 0xc0) {
      s.initialWaiting = true;
      waiting.add(s);
    }
    if (s.up.send(data, s.backend.hostname, s.backend.port)) {
      stats.packetsToMachine++;
      stats.bytesToMachine += data.length;
    } else drop("send_queue");
    if (s.initialWaiting) checkAnswered(s, t);
  }

  /** A handshake the machine has not answered in `noAnswerMs`: look the machine up again. */
  function checkAnswered(s: Session, t: number) {
    if (
      s.rerouting || closing || t - s.waitingSince < limits.noAnswerMs ||
      t - s.lastReroute < limits.noAnswerMs || lookupsFull()
    ) return;
    s.rerouting = true;
    s.lastReroute = t;
    // One fresh lookup per machine per noAnswerMs, whatever the number of unanswered sessions
    // (a handshake flood must not become a flood of Machines API or DNS requests); the others
    // read the answer it cached.
    const last = relooked.get(s.machineId);
    if (last === undefined || t - last >= limits.noAnswerMs) {
      if (relooked.size >= 100_000) relooked.delete(relooked.keys().next().value!);
      relooked.set(s.machineId, t);
      opts.resolver.invalidate?.(s.machineId);
    }
    void reroute(s);
  }

  async function reroute(s: Session) {
    const r = await lookup(s.machineId);
    s.rerouting = false;
    if (s.closed || closing) return;
    bump(stats.resolves, r.ok ? "ok" : r.reason);
    if (!r.ok) {
      // A lookup error: the next unanswered Initial tries again. Otherwise the client hears now
      // why (unless the machine already answered it: then its keys are past Initial).
      if (r.reason === "error" || r.reason === "busy" || s.answered) return;
      const [reason, message] = refusal(s.machineId, r);
      closeSession(s, `reroute_${reason}`);
      bump(stats.refusals, reason);
      sendClose(s.dcid, s.scid, s.clientHost, s.clientPort, message);
      logRefusal({
        event: "refused",
        client: `${s.clientHost}:${s.clientPort}`,
        machine: s.machineId,
        reason,
        detail: r.detail,
        ...(r.cause ? { cause: r.cause } : {}),
      });
      return;
    }
    const moved = r.backend.hostname !== s.backend.hostname || r.backend.port !== s.backend.port;
    if (moved) {
      const from = `${s.backend.hostname}:${s.backend.port}`;
      if (upstreamBindAddress(r.backend.hostname) !== upstreamBindAddress(s.backend.hostname)) {
        let up: UdpSocket;
        try {
          up = await bindUpstream(s);
        } catch (err) {
          return internalError("proxy.upstream_bind", err);
        }
        if (s.closed || closing) return up.close();
        s.up.close();
        s.up = up;
      }
      s.backend = r.backend;
      bump(stats.events, "rerouted");
      logRefusal({
        event: "session_rerouted",
        client: `${s.clientHost}:${s.clientPort}`,
        machine: s.machineId,
        from,
        backend: `${r.backend.hostname}:${r.backend.port}`,
      });
    }
    if (r.woke) {
      bump(stats.events, "woke");
      log({ event: "machine_woken", machine: s.machineId, from: r.woke.from, ms: r.woke.ms });
    }
    // The machine never saw (or never answered) the client's Initials: hand them over again now,
    // rather than waiting for the client's next retransmit (which backs off to seconds).
    if ((moved || r.woke) && !s.answered) {
      for (const d of s.replay ?? []) s.up.send(d, s.backend.hostname, s.backend.port);
    }
  }

  /**
   * One machine lookup under a deadline: whatever the resolver does, the answer (or "error",
   * timed out) comes within `resolveTimeoutMs`, and the slot it held among `maxResolving` is
   * free again. A lookup that never settles stays counted in `abandoned` until it does, and
   * those count against `maxResolving` too (beyond it, three times over), so a resolver that
   * hangs cannot pile up requests without bound either.
   */
  async function lookup(id: string, source?: string): Promise<Resolution> {
    resolving++;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let timedOut = false;
    const deadline = new Promise<Resolution>((resolve) => {
      timer = setTimeout(() => {
        timedOut = true;
        abandoned++;
        resolve({
          ok: false,
          reason: "error",
          detail: `lookup took over ${limits.resolveTimeoutMs} ms`,
        });
      }, limits.resolveTimeoutMs);
    });
    const answer = Promise.resolve().then(() => opts.resolver(id, { source })).catch((err) => ({
      ok: false as const,
      reason: "error" as const,
      detail: String(err),
    })).finally(() => {
      clearTimeout(timer);
      if (timedOut) abandoned--;
    });
    try {
      const r = await Promise.race([answer, deadline]);
      if (timedOut) {
        bump(stats.events, "resolve_timeout");
        internalError(
          "proxy.resolve_timeout",
          `machine ${id}: ${(r as { detail: string }).detail}`,
        );
      }
      return r;
    } finally {
      resolving--;
    }
  }

  /** No room for another lookup: the in-flight ones, and the timed-out ones not yet settled. */
  function lookupsFull(): boolean {
    return resolving >= limits.maxResolving || resolving + abandoned >= 3 * limits.maxResolving;
  }

  /** The session whose machine chose the DCID of `data`, if any. */
  function sessionByDcid(data: Uint8Array): Session | undefined {
    return byCid.size === 0 ? undefined : byDcid(byCid, data);
  }

  function byDcid<T>(table: Map<string, T>, data: Uint8Array): T | undefined {
    if (data.length < 2) return undefined;
    if (data[0] & 0x80) {
      const h = parseLongHeader(data, 0, true);
      return h.ok && h.value.dcid.length > 0 ? table.get(toHex(h.value.dcid)) : undefined;
    }
    // No fixed-bit check: quinn greases it (RFC 9287). Only an exact learned CID matches.
    for (const len of cidLengths) {
      if (data.length <= 1 + len) continue;
      const s = table.get(toHex(data.subarray(1, 1 + len)));
      if (s) return s;
    }
    return undefined;
  }

  function announce(m: PeerMessage) {
    if (!peerSock || !opts.peers) return;
    const buf = encodePeer(m, peerId, opts.peers.secret);
    for (const a of opts.peers.addresses) peerSock.send(buf, a.hostname, a.port);
  }

  function announceOpen(s: Session) {
    announce({
      op: "open",
      host: s.clientHost,
      port: s.clientPort,
      cids: s.cids.map(fromHexString),
    });
  }

  function forwardToPeer(r: Remote, data: Uint8Array, host: string, port: number) {
    r.seen = now();
    if (!peerSock || !opts.peers) return drop("peer_unavailable");
    const buf = encodePeer({ op: "packet", host, port, data }, peerId, opts.peers.secret);
    if (peerSock.send(buf, r.peer.hostname, r.peer.port)) bump(stats.events, "peer_forwarded");
    else drop("send_queue");
  }

  function forgetRemote(r: Remote) {
    if (remotes.get(r.key) === r) remotes.delete(r.key);
    for (const c of r.cids) if (remoteByCid.get(c) === r) remoteByCid.delete(c);
  }

  /** A message from another proxy (signed, fresh: decodePeer checked). */
  function onPeer(buf: Uint8Array, fromHost: string, fromPort: number) {
    if (closing || !opts.peers) return;
    const d = decodePeer(buf, opts.peers.secret, now());
    if (!d) return drop("peer_refused");
    if (d.sender === peerIdHex) return;
    const m = d.message;
    const key = `${m.host}|${m.port}`;
    if (m.op === "packet") {
      bump(stats.events, "peer_received");
      let s = sessions.get(key);
      if (!s) {
        s = sessionByDcid(m.data);
        if (s) migrate(s, m.host, m.port, key);
      }
      // Never forwarded again: a packet crosses at most one proxy-to-proxy hop.
      if (s) return toMachine(s, m.data);
      drop("peer_unknown");
      // Not (or no longer) ours, e.g. our "close" was lost: tell the forwarder, so the client's
      // next packet (a new connection's Initial) is routed there rather than lost here.
      if (peerSock) {
        const close = encodePeer(
          { op: "close", host: m.host, port: m.port },
          peerId,
          opts.peers.secret,
        );
        peerSock.send(close, fromHost, fromPort);
      }
      return;
    }
    if (m.op === "close") {
      const r = remotes.get(key);
      // A close older than the open in force is a recorded message played again: ignored.
      if (r && r.sender === d.sender && d.at > r.openedAt) forgetRemote(r);
      return;
    }
    const old = remotes.get(key);
    if (old && old.sender === d.sender && d.at < old.openedAt) return; // a replayed older open
    // "open": the sender holds this client. Two proxies that both routed the client's Initials
    // (a retransmit landed on the other) keep one session: the one the machine answered (it has
    // learned CIDs), else the one of the lower proxy id.
    const local = sessions.get(key);
    if (local) {
      if (local.answered || (m.cids.length === 0 && d.sender > peerIdHex)) return;
      closeSession(local, "peer_holds");
    }
    const p = pendings.get(key);
    if (old) forgetRemote(old);
    // The same connection under a new client address (it migrated at the holder): the new "open"
    // replaces the old one at once, so its CIDs are never unrouted in between.
    for (const c of m.cids) {
      const prev = remoteByCid.get(toHex(c));
      if (prev && prev.sender === d.sender) forgetRemote(prev);
    }
    while (remotes.size >= limits.maxSessions * 2) forgetRemote(remotes.values().next().value!);
    const r: Remote = {
      key,
      peer: { hostname: fromHost, port: fromPort },
      sender: d.sender,
      openedAt: d.at,
      cids: [],
      seen: now(),
    };
    remotes.set(key, r);
    for (const c of m.cids.slice(0, MAX_CIDS_PER_SESSION)) {
      if (c.length < MIN_LEARNED_CID) continue;
      const hex = toHex(c);
      if (byCid.has(hex)) continue; // ours: never handed to another proxy
      r.cids.push(hex);
      remoteByCid.set(hex, r);
      cidLengths.add(c.length);
    }
    if (p) {
      const buffered = p.buffered;
      forget(p);
      for (const b of buffered) forwardToPeer(r, b, m.host, m.port);
    }
  }

  /** Moves a session to the client's new address (its DCID matched; see sessionByDcid). */
  function migrate(s: Session, host: string, port: number, key: string) {
    const from = `${s.clientHost}:${s.clientPort}`;
    sessions.delete(s.key);
    inc(sessionsBySource, s.clientHost, -1);
    inc(sessionsByPrefix, s.prefix, -1);
    s.key = key;
    s.clientHost = host;
    s.clientPort = port;
    s.prefix = sourcePrefix(host);
    sessions.set(key, s);
    inc(sessionsBySource, host, 1);
    inc(sessionsByPrefix, s.prefix, 1);
    bump(stats.events, "migrated");
    announceOpen(s);
    logRefusal({
      event: "session_migrated",
      machine: s.machineId,
      from,
      client: `${host}:${port}`,
    });
  }

  /** Remembers the connection IDs the machine chose, from the SCIDs of its long headers. */
  function learnCids(s: Session, reply: Uint8Array) {
    const split = splitDatagram(reply, true);
    if (!split.ok) return;
    let learned = false;
    for (const h of split.value) {
      if (h.scid.length === 0) continue;
      const cid = toHex(h.scid);
      if (s.cids.includes(cid)) continue;
      // A short CID would match the first bytes of other connections' DCIDs (a hostile machine
      // choosing 1-byte CIDs would catch other clients' packets from new addresses).
      if (h.scid.length < MIN_LEARNED_CID) continue;
      // First come keeps a CID: a machine cannot take over a connection of another machine.
      if (byCid.has(cid)) continue;
      // The first ones stay (a client keeps the handshake's DCID): a machine sending fresh SCIDs
      // cannot evict them, nor make every reply an announcement to the peers.
      if (s.cids.length >= MAX_CIDS_PER_SESSION) break;
      s.cids.push(cid);
      byCid.set(cid, s);
      cidLengths.add(h.scid.length);
      learned = true;
    }
    if (learned) announceOpen(s);
  }

  /** A socket towards `s.backend` on which only that machine may speak. */
  function bindUpstream(s: Session): Promise<UdpSocket> {
    return bindUdp(impl, upstreamBindAddress(s.backend.hostname), 0, (reply, fh, fp) => {
      if (s.closed) return;
      if (fp !== s.backend.port || !sameHost(fh, s.backend.hostname)) {
        return drop("upstream_stranger");
      }
      s.lastSeen = s.lastFromMachine = now();
      if (s.waitingSince !== 0) {
        s.waitingSince = 0;
        if (s.initialWaiting) {
          s.initialWaiting = false;
          waiting.delete(s);
        }
      }
      if (!s.answered) {
        s.answered = true;
        s.replay = undefined;
      }
      if (reply[0] & 0x80) learnCids(s, reply);
      if (front.send(reply, s.clientHost, s.clientPort)) {
        stats.packetsToClient++;
        stats.bytesToClient += reply.length;
      } else drop("send_queue");
    }, {
      recvBuffer: UPSTREAM_RECV_BUFFER,
      onError: (err) => internalError("proxy.upstream_recv", err),
    });
  }

  function onPendingPacket(p: Pending, data: Uint8Array, host: string, port: number) {
    if (p.buffered.length >= limits.assembly.maxPackets) return drop("pending_buffer");
    if (p.resolving) {
      // ClientHello already read: keep the datagram for the session (retransmits, 0-RTT).
      keep(p, data);
      return;
    }
    if (!allowInitial(host)) return drop("rate");
    const r = readClientInitials(data, p.dcid);
    if (!r.ok) return drop(r.reason);
    onFrames(p, r.value.frames, data, host, port);
  }

  /** Buffers a copy of `data` for `p`, charging it to the pending budget. */
  function keep(p: Pending, data: Uint8Array) {
    p.buffered.push(new Uint8Array(data));
    charge(p, data.length);
  }

  function charge(p: Pending, n: number) {
    p.bytes += n;
    pendingBytes += n;
    stats.pendingBytes = pendingBytes;
    // Over budget: the heaviest prefix pays (possibly `p` itself).
    while (pendingBytes > limits.maxPendingBytes && pendings.size > 0) evict(heaviest());
  }

  function onFrames(
    p: Pending,
    frames: { crypto: { offset: number; data: Uint8Array }[]; close?: unknown }[],
    data: Uint8Array,
    host: string,
    port: number,
  ) {
    if (frames.some((f) => f.close)) {
      forget(p);
      return drop("client_closed");
    }
    const before = p.asm.allocated;
    for (const f of frames) {
      const a = p.asm.add(f.crypto);
      if (!a.ok) return refuse(p, host, port, a.reason, "ClientHello too large");
    }
    if (p.asm.allocated !== before) charge(p, p.asm.allocated - before);
    if (p.done) return; // evicted to pay for its own growth
    keep(p, data);
    if (p.done) return;
    const hello = p.asm.sni();
    if (!hello.ok) {
      if (hello.reason === "incomplete") return;
      return refuse(
        p,
        host,
        port,
        hello.reason,
        "no server name: expected <machine_id>.vault.internal",
      );
    }
    const id = machineIdFromSni(hello.value.sni);
    if (!id) {
      return refuse(
        p,
        host,
        port,
        "bad_sni",
        `server name ${hello.value.sni} is not <machine_id>.vault.internal`,
      );
    }
    if (lookupsFull()) {
      return refuse(p, host, port, "resolve_busy", "proxy is busy; retry shortly");
    }
    p.resolving = true;
    void route(p, id, host, port);
  }

  async function route(p: Pending, id: string, host: string, port: number) {
    const r = await lookup(id, p.prefix);
    if (p.done || closing) return;
    bump(stats.resolves, r.ok ? "ok" : r.reason);
    if (!r.ok) {
      logRefusal({
        event: "refused",
        client: `${host}:${port}`,
        machine: id,
        reason: r.reason,
        detail: r.detail,
        ...(r.cause ? { cause: r.cause } : {}),
      });
      const [reason, message] = refusal(id, r);
      return refuse(p, host, port, reason, message, true);
    }
    if (sessions.size >= limits.maxSessions) return refuse(p, host, port, "full", "proxy is full");
    if ((sessionsBySource.get(host) ?? 0) >= limits.maxSessionsPerSource) {
      return refuse(p, host, port, "source_full", "too many connections from your address");
    }
    if ((sessionsByPrefix.get(p.prefix) ?? 0) >= limits.maxSessionsPerPrefix) {
      return refuse(p, host, port, "prefix_full", "too many connections from your network");
    }
    if (!allowMachine(id)) {
      return refuse(
        p,
        host,
        port,
        "machine_rate",
        `too many new connections to machine ${id}; retry in a few seconds`,
      );
    }
    const backend = r.backend;
    const key = p.key;
    const t0 = now();
    let replayBytes = 0;
    const s: Session = {
      key,
      clientHost: host,
      clientPort: port,
      prefix: p.prefix,
      backend,
      up: undefined as unknown as UdpSocket,
      opened: t0,
      lastSeen: t0,
      lastFromMachine: t0,
      machineId: id,
      confirmed: false,
      dcid: p.dcid,
      scid: p.scid,
      cids: [],
      answered: false,
      waitingSince: 0,
      initialWaiting: false,
      replay: p.buffered.filter((d) => (replayBytes += d.length) <= MAX_REPLAY_BYTES),
      rerouting: false,
      lastReroute: t0,
      closed: false,
    };
    let up: UdpSocket;
    try {
      up = await bindUpstream(s);
    } catch (err) {
      const exhausted = EXHAUSTION.test(String(err));
      logRefusal({
        event: "upstream_bind_failed",
        machine: id,
        code: exhausted ? "proxy.exhausted" : "proxy.upstream_bind",
        error: String(err),
      });
      return refuse(
        p,
        host,
        port,
        exhausted ? "exhausted" : "upstream_bind",
        exhausted ? "proxy is out of resources; retry shortly" : `proxy cannot reach machine ${id}`,
        true,
      );
    }
    s.up = up;
    if (p.done || closing) {
      up.close();
      return;
    }
    // Routes resolved at once all passed the check above before any had its socket (seen with
    // 161 of 160 under a file limit): check again, so the descriptor budget is never overshot.
    if (sessions.size >= limits.maxSessions) {
      up.close();
      return refuse(p, host, port, "full", "proxy is full");
    }
    const t = now();
    s.opened =
      s.lastSeen =
      s.lastFromMachine =
      s.lastReroute =
        t;
    forget(p);
    sessions.set(key, s);
    inc(sessionsBySource, host, 1);
    inc(sessionsByPrefix, p.prefix, 1);
    stats.sessions = sessions.size;
    stats.opened++;
    announceOpen(s);
    for (const d of p.buffered) {
      if (!s.confirmed && answersHandshake(d)) s.confirmed = true;
      if (up.send(d, backend.hostname, backend.port)) {
        stats.packetsToMachine++;
        stats.bytesToMachine += d.length;
      }
    }
    p.buffered = [];
    // The machine is to answer these: if it does not, the route is looked up again.
    s.waitingSince = t;
    s.initialWaiting = true;
    waiting.add(s);
    if (r.woke) {
      bump(stats.events, "woke");
      log({ event: "machine_woken", machine: id, from: r.woke.from, ms: r.woke.ms });
    }
    const secs = (t - p.started) / 1000;
    metrics.routingSeconds.observe(secs);
    logRefusal({
      event: "session_open",
      client: `${host}:${port}`,
      machine: id,
      backend: `${backend.hostname}:${backend.port}`,
      routing_ms: Math.round(secs * 1000 * 10) / 10,
    });
  }

  function refuse(
    p: Pending,
    host: string,
    port: number,
    reason: string,
    message: string,
    logged = false,
  ) {
    forget(p);
    bump(stats.refusals, reason);
    sendClose(p.dcid, p.scid, host, port, message);
    if (!logged) {
      logRefusal({ event: "refused", client: `${host}:${port}`, reason, detail: message });
    }
  }

  function sendClose(
    dcid: Uint8Array,
    scid: Uint8Array,
    host: string,
    port: number,
    message: string,
  ) {
    const close = buildInitialClose({
      originalDcid: dcid,
      clientScid: scid,
      serverCid: crypto.getRandomValues(new Uint8Array(8)),
      code: TransportError.CONNECTION_REFUSED,
      reason: message,
    });
    front.send(close, host, port);
  }

  function addPending(p: Pending) {
    pendings.set(p.key, p);
    inc(pendingBySource, p.host, 1);
    let m = pendingByPrefix.get(p.prefix);
    if (!m) pendingByPrefix.set(p.prefix, m = new Map());
    m.set(p.key, p);
    pendingBytes += p.bytes;
    stats.pending = pendings.size;
    stats.pendingBytes = pendingBytes;
  }

  function forget(p: Pending) {
    if (p.done) return;
    p.done = true;
    if (pendings.get(p.key) === p) pendings.delete(p.key);
    inc(pendingBySource, p.host, -1);
    const m = pendingByPrefix.get(p.prefix);
    m?.delete(p.key);
    if (m && m.size === 0) pendingByPrefix.delete(p.prefix);
    pendingBytes -= p.bytes;
    stats.pending = pendings.size;
    stats.pendingBytes = pendingBytes;
  }

  function evict(p: Pending) {
    forget(p);
    drop("pending_evicted");
  }

  /** The oldest pending client of the prefix with the most pending clients. */
  function heaviest(): Pending {
    let best: Map<string, Pending> | undefined;
    for (const m of pendingByPrefix.values()) if (!best || m.size > best.size) best = m;
    return best!.values().next().value!;
  }

  function allowInitial(host: string): boolean {
    const t = now();
    let b = buckets.get(host);
    if (!b) {
      // Bounded: the oldest-created bucket makes room, so a spoofed-source flood cannot fill the
      // table and lock new sources out (it only resets buckets it could have had anyway).
      if (buckets.size >= limits.maxPending * 16) buckets.delete(buckets.keys().next().value!);
      b = { tokens: limits.initialBurst, at: t };
      buckets.set(host, b);
    }
    return take(b, t, limits.initialsPerSecond, limits.initialBurst);
  }

  function allowMachine(id: string): boolean {
    const t = now();
    let b = machineBuckets.get(id);
    if (!b) {
      // Only resolved (existing) machines get here, so this stays as small as the fleet.
      if (machineBuckets.size >= 100_000) {
        machineBuckets.delete(machineBuckets.keys().next().value!);
      }
      b = { tokens: limits.machineSessionBurst, at: t };
      machineBuckets.set(id, b);
    }
    return take(b, t, limits.machineSessionsPerSecond, limits.machineSessionBurst);
  }

  function closeSession(s: Session, reason: string) {
    if (s.closed) return;
    s.closed = true;
    if (sessions.get(s.key) === s) sessions.delete(s.key);
    for (const cid of s.cids) if (byCid.get(cid) === s) byCid.delete(cid);
    waiting.delete(s);
    announce({ op: "close", host: s.clientHost, port: s.clientPort });
    inc(sessionsBySource, s.clientHost, -1);
    inc(sessionsByPrefix, s.prefix, -1);
    s.up.close();
    stats.sessions = sessions.size;
    bump(stats.closed, reason);
    if (reason !== "shutdown") {
      logRefusal({
        event: "session_close",
        client: `${s.clientHost}:${s.clientPort}`,
        machine: s.machineId,
        reason,
      });
    }
  }

  const sweepEvery = Math.max(
    50,
    Math.min(1000, limits.idleTimeoutMs / 4, limits.pendingTimeoutMs / 2),
  );
  const sweeper = setInterval(() => {
    const t = now();
    for (const s of sessions.values()) {
      if (t - s.lastSeen > limits.idleTimeoutMs) closeSession(s, "idle");
      else if (t - s.lastFromMachine > limits.idleTimeoutMs) closeSession(s, "machine_silent");
      else if (!s.confirmed && t - s.opened > limits.handshakeTimeoutMs) {
        closeSession(s, "handshake_timeout");
      }
    }
    for (const p of pendings.values()) {
      if (!p.resolving && t - p.started > limits.pendingTimeoutMs) {
        forget(p);
        drop("incomplete");
      }
    }
    for (const r of remotes.values()) if (t - r.seen > limits.idleTimeoutMs) forgetRemote(r);
    for (const [id, at] of relooked) if (t - at >= limits.noAnswerMs) relooked.delete(id);
    for (const [h, b] of buckets) {
      if (b.tokens + ((t - b.at) / 1000) * limits.initialsPerSecond >= limits.initialBurst) {
        buckets.delete(h);
      }
    }
    for (const [id, b] of machineBuckets) {
      const full = b.tokens + ((t - b.at) / 1000) * limits.machineSessionsPerSecond;
      if (full >= limits.machineSessionBurst) machineBuckets.delete(id);
    }
  }, sweepEvery);

  // Unanswered handshakes are checked between client retransmits too, so a new route (or a woken
  // machine) gets the client's Initials replayed without waiting for the next one.
  const answerCheck = setInterval(() => {
    const t = now();
    for (const s of waiting) checkAnswered(s, t);
  }, Math.max(50, Math.min(250, limits.noAnswerMs / 4)));

  log({
    event: "listening",
    address: `${front.hostname}:${front.port}`,
    udp: impl,
    max_sessions: limits.maxSessions,
    open_file_limit: nofile ?? null,
  });

  return {
    hostname: front.hostname,
    port: front.port,
    stats,
    metrics,
    limits,
    peerPort: peerSock?.port,
    async close() {
      if (closing) return;
      closing = true;
      clearInterval(sweeper);
      clearInterval(answerCheck);
      front.close();
      for (const s of [...sessions.values()]) closeSession(s, "shutdown");
      for (const p of [...pendings.values()]) forget(p);
      peerSock?.close();
      await front.done;
      log({ event: "stopped" });
    },
  };
}

/** The refusal reason and the client's CONNECTION_CLOSE text for a failed lookup. */
function refusal(id: string, r: Resolution & { ok: false }): [string, string] {
  switch (r.reason) {
    case "unknown":
      // DNS knows only started machines: no record may also be a stopped or suspended one.
      return [
        "unknown_machine",
        `unknown machine ${id}${
          r.detail.startsWith("no AAAA") ? " (or not running: stopped or suspended)" : ""
        }`,
      ];
    case "stopped":
      return [
        "stopped",
        `${r.detail}; this proxy does not wake machines: fly-vault wake, then retry`,
      ];
    case "wake_failed":
      return ["wake_failed", `waking machine ${id} failed: ${r.detail}`];
    case "busy":
      return ["resolve_busy", "proxy is busy looking machines up; retry shortly"];
    default:
      return ["resolve_error", `cannot reach machine ${id} now`];
  }
}

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));

function fromHexString(h: string): Uint8Array {
  const out = new Uint8Array(h.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(h.slice(2 * i, 2 * i + 2), 16);
  return out;
}

function toHex(b: Uint8Array): string {
  let out = "";
  for (let i = 0; i < b.length; i++) out += HEX[b[i]];
  return out;
}

/** Refusal, open and close log lines per second at most; the rest are counted ("suppressed"). */
const REFUSAL_LOGS_PER_SECOND = 20;

function take(
  b: { tokens: number; at: number },
  t: number,
  perSecond: number,
  burst: number,
): boolean {
  b.tokens = Math.min(burst, b.tokens + ((t - b.at) / 1000) * perSecond);
  b.at = t;
  if (b.tokens < 1) return false;
  b.tokens--;
  return true;
}

function inc(m: Map<string, number>, k: string, d: number) {
  const n = (m.get(k) ?? 0) + d;
  if (n <= 0) m.delete(k);
  else m.set(k, n);
}

/**
 * True when a client datagram carries a Handshake packet or a 1-RTT packet: the client has
 * keys only the machine's first flight gives, so it is a real peer, not an Initial sprayer.
 */
export function answersHandshake(data: Uint8Array): boolean {
  const split = splitDatagram(data);
  if (!split.ok) return split.reason === "short_header";
  if (split.value.some((h) => h.type === 2)) return true;
  const last = split.value[split.value.length - 1];
  // A short-header packet coalesced after the long ones.
  return last !== undefined && last.end < data.length && !(data[last.end] & 0x80) &&
    data.length - last.end >= 7 && (data[last.end] & 0x40) !== 0;
}

/**
 * Receive buffer of an upstream socket: above any QUIC datagram a machine sends (quinn's path
 * MTU discovery stops at 1452 bytes; Fly's path is ~1300), far below Deno's 64 KiB default,
 * which would cost 64 KiB per idle session.
 */
const UPSTREAM_RECV_BUFFER = 4096;

function upstreamBindAddress(backendHost: string): string {
  if (backendHost.includes(":")) return backendHost === "::1" ? "::1" : "::";
  return backendHost.startsWith("127.") ? "127.0.0.1" : "0.0.0.0";
}

function sameHost(a: string, b: string): boolean {
  if (a === b) return true;
  // node:dgram on a dual-stack socket reports v4 peers as ::ffff:a.b.c.d.
  return a.startsWith("::ffff:") && a.slice(7) === b;
}
