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
 * @module
 */
import { VaultError } from "../errors/mod.ts";
import {
  type AssemblyLimits,
  buildInitialClose,
  CryptoAssembler,
  DEFAULT_ASSEMBLY_LIMITS,
  type DropReason,
  readClientInitials,
  TransportError,
} from "./initial.ts";
import { bump, createMetrics, newStats, type ProxyMetrics, type ProxyStats } from "./metrics.ts";
import { type Backend, machineIdFromSni, type Resolver } from "./resolver.ts";
import { bindUdp, type UdpImpl, type UdpSocket } from "./udp.ts";

/** Bounds that keep the proxy's memory and work finite whatever arrives. */
export interface ProxyLimits {
  /** Sessions at once; a client beyond is refused ("full"). */
  maxSessions: number;
  /** Clients pending (ClientHello incomplete or being resolved) at once. */
  maxPending: number;
  /** A session with no datagram either way for this long is closed. */
  idleTimeoutMs: number;
  /** A pending client that has not completed its ClientHello in this time is forgotten. */
  pendingTimeoutMs: number;
  /** Initial datagrams per second per source IP from clients without a session. */
  initialsPerSecond: number;
  /** Burst allowance for the above. */
  initialBurst: number;
  /** CRYPTO bytes and Initial packets buffered per pending client. */
  assembly: AssemblyLimits;
}

/** Defaults: generous for people, tight for floods. */
export const DEFAULT_LIMITS: ProxyLimits = {
  maxSessions: 20_000,
  maxPending: 2_000,
  // Above init's 60 s server idle timeout, so QUIC, not the proxy, decides when a path is dead.
  idleTimeoutMs: 120_000,
  pendingTimeoutMs: 3_000,
  initialsPerSecond: 20,
  initialBurst: 40,
  assembly: DEFAULT_ASSEMBLY_LIMITS,
};

/** One structured log event. */
export type LogEvent = Record<string, unknown> & { event: string };

/** Options of {@link startProxy}. */
export interface ProxyOptions {
  listen: { hostname: string; port: number };
  resolver: Resolver;
  udp?: UdpImpl;
  limits?: Partial<ProxyLimits>;
  log?: (e: LogEvent) => void;
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
  /** Stops receiving, closes every session. */
  close(): Promise<void>;
}

interface Session {
  key: string;
  clientHost: string;
  clientPort: number;
  backend: Backend;
  up: UdpSocket;
  lastSeen: number;
  machineId: string;
}

interface Pending {
  key: string;
  dcid: Uint8Array;
  scid: Uint8Array;
  asm: CryptoAssembler;
  buffered: Uint8Array[];
  started: number;
  resolving: boolean;
  done: boolean;
}

/** Starts a proxy. Resolves once the public socket is bound. */
export async function startProxy(opts: ProxyOptions): Promise<Proxy> {
  const limits: ProxyLimits = { ...DEFAULT_LIMITS, ...opts.limits };
  const impl = opts.udp ?? "deno";
  const log = opts.log ??
    ((e) => console.log(JSON.stringify({ t: new Date().toISOString(), ...e })));
  const now = opts.now ?? Date.now;
  const stats = newStats();
  const metrics = createMetrics(stats);
  const sessions = new Map<string, Session>();
  const pendings = new Map<string, Pending>();
  const buckets = new Map<string, { tokens: number; at: number }>();
  let closing = false;

  const onDrop = opts.onDrop;
  const drop = (reason: DropReason | string) => {
    bump(stats.drops, reason);
    onDrop?.(reason);
  };

  let front: UdpSocket;
  try {
    front = await bindUdp(impl, opts.listen.hostname, opts.listen.port, onClient);
  } catch (err) {
    throw new VaultError(
      "proxy.listen",
      `cannot listen on ${opts.listen.hostname}:${opts.listen.port}: ${(err as Error).message}`,
      "choose another --listen address, or stop whatever holds that port",
    );
  }

  function onClient(data: Uint8Array, host: string, port: number) {
    const key = `${host}|${port}`;
    const s = sessions.get(key);
    if (s) {
      s.lastSeen = now();
      if (s.up.send(data, s.backend.hostname, s.backend.port)) {
        stats.packetsToMachine++;
        stats.bytesToMachine += data.length;
      } else drop("send_queue");
      return;
    }
    if (closing) return;
    const p = pendings.get(key);
    if (p) return onPendingPacket(p, data, host, port);
    // A new client address. Cheap checks first: only a v1 long-header Initial can start a session.
    if (data.length === 0 || !(data[0] & 0x80)) {
      return drop(data.length < 7 ? "short" : "short_header");
    }
    if (!allowInitial(host)) return drop("rate");
    if (pendings.size >= limits.maxPending) return drop("pending_full");
    const r = readClientInitials(data);
    if (!r.ok) return drop(r.reason);
    const fresh: Pending = {
      key,
      dcid: r.value.dcid,
      scid: r.value.scid,
      asm: new CryptoAssembler(limits.assembly),
      buffered: [],
      started: now(),
      resolving: false,
      done: false,
    };
    pendings.set(key, fresh);
    stats.pending = pendings.size;
    onFrames(fresh, r.value.frames, data, host, port);
  }

  function onPendingPacket(p: Pending, data: Uint8Array, host: string, port: number) {
    if (p.buffered.length >= limits.assembly.maxPackets) return drop("pending_buffer");
    if (p.resolving) {
      // ClientHello already read: keep the datagram for the session (retransmits, 0-RTT).
      p.buffered.push(new Uint8Array(data));
      return;
    }
    if (!allowInitial(host)) return drop("rate");
    const r = readClientInitials(data, p.dcid);
    if (!r.ok) return drop(r.reason);
    onFrames(p, r.value.frames, data, host, port);
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
    for (const f of frames) {
      const a = p.asm.add(f.crypto);
      if (!a.ok) return refuse(p, host, port, a.reason, "ClientHello too large");
    }
    p.buffered.push(new Uint8Array(data));
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
    p.resolving = true;
    void route(p, id, host, port);
  }

  async function route(p: Pending, id: string, host: string, port: number) {
    const r = await opts.resolver(id).catch((err) => ({
      ok: false as const,
      reason: "error" as const,
      detail: String(err),
    }));
    if (p.done || closing) return;
    bump(stats.resolves, r.ok ? "ok" : r.reason);
    if (!r.ok) {
      log({
        event: "refused",
        client: `${host}:${port}`,
        machine: id,
        reason: r.reason,
        detail: r.detail,
      });
      return refuse(
        p,
        host,
        port,
        r.reason === "unknown" ? "unknown_machine" : "resolve_error",
        r.reason === "unknown" ? `unknown machine ${id}` : `cannot reach machine ${id} now`,
        true,
      );
    }
    if (sessions.size >= limits.maxSessions) return refuse(p, host, port, "full", "proxy is full");
    const backend = r.backend;
    const key = p.key;
    let up: UdpSocket;
    try {
      up = await bindUdp(impl, upstreamBindAddress(backend.hostname), 0, (reply, fh, fp) => {
        const s = sessions.get(key);
        if (!s) return;
        // Only the machine may speak on this socket.
        if (fp !== backend.port || !sameHost(fh, backend.hostname)) {
          return drop("upstream_stranger");
        }
        s.lastSeen = now();
        if (front.send(reply, s.clientHost, s.clientPort)) {
          stats.packetsToClient++;
          stats.bytesToClient += reply.length;
        } else drop("send_queue");
      }, { recvBuffer: UPSTREAM_RECV_BUFFER });
    } catch (err) {
      log({ event: "upstream_bind_failed", machine: id, error: String(err) });
      return refuse(p, host, port, "upstream_bind", `proxy cannot reach machine ${id}`, true);
    }
    if (p.done || closing) {
      up.close();
      return;
    }
    const s: Session = {
      key,
      clientHost: host,
      clientPort: port,
      backend,
      up,
      lastSeen: now(),
      machineId: id,
    };
    forget(p);
    sessions.set(key, s);
    stats.sessions = sessions.size;
    stats.opened++;
    for (const d of p.buffered) {
      if (up.send(d, backend.hostname, backend.port)) {
        stats.packetsToMachine++;
        stats.bytesToMachine += d.length;
      }
    }
    p.buffered = [];
    const secs = (now() - p.started) / 1000;
    metrics.routingSeconds.observe(secs);
    log({
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
    const close = buildInitialClose({
      originalDcid: p.dcid,
      clientScid: p.scid,
      serverCid: crypto.getRandomValues(new Uint8Array(8)),
      code: TransportError.CONNECTION_REFUSED,
      reason: message,
    });
    front.send(close, host, port);
    if (!logged) log({ event: "refused", client: `${host}:${port}`, reason, detail: message });
  }

  function forget(p: Pending) {
    p.done = true;
    if (pendings.get(p.key) === p) pendings.delete(p.key);
    stats.pending = pendings.size;
  }

  function allowInitial(host: string): boolean {
    const t = now();
    let b = buckets.get(host);
    if (!b) {
      // Bounded: under a spoofed-source flood, new sources are refused rather than remembered.
      if (buckets.size >= limits.maxPending * 16) return false;
      b = { tokens: limits.initialBurst, at: t };
      buckets.set(host, b);
    }
    b.tokens = Math.min(
      limits.initialBurst,
      b.tokens + ((t - b.at) / 1000) * limits.initialsPerSecond,
    );
    b.at = t;
    if (b.tokens < 1) return false;
    b.tokens--;
    return true;
  }

  function closeSession(s: Session, reason: string) {
    if (sessions.get(s.key) !== s) return;
    sessions.delete(s.key);
    s.up.close();
    stats.sessions = sessions.size;
    bump(stats.closed, reason);
    if (reason !== "shutdown") {
      log({
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
    }
    for (const p of pendings.values()) {
      if (!p.resolving && t - p.started > limits.pendingTimeoutMs) {
        forget(p);
        drop("incomplete");
      }
    }
    for (const [h, b] of buckets) {
      if (b.tokens + ((t - b.at) / 1000) * limits.initialsPerSecond >= limits.initialBurst) {
        buckets.delete(h);
      }
    }
  }, sweepEvery);

  log({ event: "listening", address: `${front.hostname}:${front.port}`, udp: impl });

  return {
    hostname: front.hostname,
    port: front.port,
    stats,
    metrics,
    async close() {
      if (closing) return;
      closing = true;
      clearInterval(sweeper);
      front.close();
      for (const s of [...sessions.values()]) closeSession(s, "shutdown");
      for (const p of [...pendings.values()]) forget(p);
      await front.done;
      log({ event: "stopped" });
    },
  };
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
