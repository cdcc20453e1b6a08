/**
 * The only code that touches Deno's QUIC API. Everything above sees
 * {@link VaultConnection}s that open and accept tagged byte streams.
 *
 * @module
 */
import { VaultError } from "../errors/mod.ts";
import { ALPN, type ByteStream, isStreamTag, type StreamTag } from "../protocol/mod.ts";
import { probeRefused } from "./refused.ts";
import { tuneEndpointSocket } from "./udp_buffers.ts";

/** Address of a peer. */
export interface PeerAddr {
  hostname: string;
  port: number;
}

/** A stream whose tag byte has already been read (server) or written (client). */
export interface TaggedStream extends ByteStream {
  tag: StreamTag;
}

/** An established QUIC connection, client or server side. */
export interface VaultConnection {
  readonly remoteAddr: PeerAddr;
  /** Opens a bidirectional stream and writes its tag byte. */
  openStream(tag: StreamTag): Promise<ByteStream>;
  /** Streams the peer opens, tag byte already read. Unknown tags are reset and skipped. */
  incoming(): AsyncIterable<TaggedStream>;
  /**
   * Closes the connection with an application code and a short reason, and
   * resolves once the close has had its chance to leave: a process that exits
   * right after must not leave the peer waiting out its idle timeout.
   */
  close(code?: number, reason?: string): Promise<void>;
  /** Resolves when the connection is gone, for whatever reason. */
  readonly closed: Promise<{ code: number; reason: string }>;
  /**
   * Client side: sends one heartbeat datagram; resolves when the peer echoes
   * it (never, on a dead path or from a peer that does not echo: callers keep
   * their own time). Absent on connections that are not direct QUIC ones.
   */
  ping?(): Promise<void>;
}

/** Keep-alives every few seconds keep NAT bindings and idle consoles alive for hours. */
export const CLIENT_KEEPALIVE_MS = 2_000;
/**
 * How long silence means the path is dead: five missed keep-alives. The console re-attaches
 * losslessly, so declaring loss early costs little and spares the user a frozen screen.
 */
export const CLIENT_IDLE_TIMEOUT_MS = 10_000;
/** Server idle timeout; the client's keep-alives reset it. */
export const SERVER_IDLE_TIMEOUT_MS = 60_000;
/** Every forwarded TCP connection is a stream: Deno's default of 100 is too few for a browser. */
export const MAX_STREAMS = 1024;
/**
 * Congestion control on both ends: Deno's "low-latency" is quinn's BBR. Its
 * default (Cubic, also what "throughput" picks) reads every random loss as
 * congestion: across an emulated 80 ms link with 2% loss a bare stream moved
 * 1.1–1.3 Mbit/s under Cubic and 33–35 Mbit/s under BBR (50 Mbit/s link), at
 * 40 ms/0.1% 18–28 against 124–132 Mbit/s (200 Mbit/s link). On loopback BBR's
 * pacing costs CPU (1.25 vs 2.2 Gbit/s), still above what ssh -L moves there.
 */
export const CONGESTION_CONTROL = "low-latency" as const;

/**
 * Heartbeat datagrams: `PING id` (u32) from the client, echoed as `PONG id`.
 * Datagrams, not a stream: a ping never waits behind retransmissions of
 * older data, so the first one through after an outage is heard at once.
 */
const PING = 0x70;
const PONG = 0x50;
/** Echoes a server sends per second at most (a flood costs the sender as much, but bound it). */
const MAX_ECHOES_PER_SECOND = 50;
/** Unanswered pings remembered: older ones are forgotten (their callers keep their own time). */
const MAX_PINGS_WAITING = 64;

/** Server side: answers heartbeat datagrams until the connection ends. */
async function echoPings(conn: Deno.QuicConn): Promise<void> {
  let windowStart = 0;
  let count = 0;
  while (true) {
    let d: Uint8Array;
    try {
      d = await conn.readDatagram();
    } catch {
      return;
    }
    if (d.length !== 5 || d[0] !== PING) continue;
    const now = performance.now();
    if (now - windowStart >= 1000) (windowStart = now, count = 0);
    if (++count > MAX_ECHOES_PER_SECOND) continue;
    d[0] = PONG;
    conn.sendDatagram(d).catch(() => {});
  }
}

/** Client side: `ping()` for {@link VaultConnection}. */
function pinger(conn: Deno.QuicConn): () => Promise<void> {
  const waiting = new Map<number, () => void>();
  let next = 0;
  let reading = false;
  const read = async () => {
    while (true) {
      let d: Uint8Array;
      try {
        d = await conn.readDatagram();
      } catch {
        return;
      }
      if (d.length !== 5 || d[0] !== PONG) continue;
      const id = new DataView(d.buffer, d.byteOffset, 5).getUint32(1);
      waiting.get(id)?.();
      waiting.delete(id);
    }
  };
  return () => {
    if (!reading) (reading = true, read());
    const id = next;
    next = (next + 1) >>> 0;
    const d = new Uint8Array(5);
    d[0] = PING;
    new DataView(d.buffer).setUint32(1, id);
    const heard = new Promise<void>((resolve) => waiting.set(id, resolve));
    if (waiting.size > MAX_PINGS_WAITING) waiting.delete(waiting.keys().next().value!);
    conn.sendDatagram(d).catch(() => {});
    return heard;
  };
}

function wrap(conn: Deno.QuicConn, side: "client" | "server"): VaultConnection {
  const closed = conn.closed.then(
    (info) => ({ code: info.closeCode, reason: info.reason }),
    (err) => ({ code: -1, reason: String(err?.message ?? err) }),
  );
  if (side === "server") echoPings(conn);
  return {
    ping: side === "client" ? pinger(conn) : undefined,
    remoteAddr: { hostname: conn.remoteAddr.hostname, port: conn.remoteAddr.port },
    async openStream(tag) {
      const stream = await conn.createBidirectionalStream();
      const writer = stream.writable.getWriter();
      await writer.write(new Uint8Array([tag]));
      writer.releaseLock();
      return stream;
    },
    async *incoming() {
      const reader = conn.incomingBidirectionalStreams.getReader();
      try {
        while (true) {
          const { value: stream, done } = await reader.read().catch(() => ({
            value: undefined,
            done: true as const,
          }));
          if (done || !stream) return;
          const tagged = await readTag(stream);
          if (tagged) yield tagged;
        }
      } finally {
        reader.releaseLock();
      }
    },
    async close(code = 0, reason = "") {
      try {
        conn.close({ closeCode: code, reason });
      } catch {
        // already closed
      }
      // The CONNECTION_CLOSE frame is sent by the endpoint's driver; give it a turn.
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([closed, new Promise((r) => timer = setTimeout(r, 100))]);
      clearTimeout(timer);
      await new Promise((r) => setTimeout(r, 1));
    },
    closed,
  };
}

/**
 * Reads the first byte of a peer-opened stream without consuming anything else,
 * and hands back Deno's own stream. A one-byte BYOB read takes exactly the tag,
 * so nothing is left over to put back. A wrapper stream would add JS work per
 * chunk and hide that the readable is resource-backed: Deno's `pipeTo` from it
 * to a socket then copies natively, with no JS per chunk (forwards rely on it).
 */
async function readTag(stream: Deno.QuicBidirectionalStream): Promise<TaggedStream | null> {
  const reader = stream.readable.getReader({ mode: "byob" });
  let tag: number;
  try {
    const r = await reader.read(new Uint8Array(1));
    if (r.done || !r.value || r.value.length === 0) {
      reader.releaseLock();
      return null;
    }
    tag = r.value[0];
  } catch {
    return null;
  }
  if (!isStreamTag(tag)) {
    await reader.cancel().catch(() => {});
    await stream.writable.abort().catch(() => {});
    return null;
  }
  reader.releaseLock();
  return { tag, readable: stream.readable, writable: stream.writable };
}

/** A listening server. */
export interface VaultListener {
  readonly addr: PeerAddr;
  /** Accepted connections (handshake complete). */
  connections(): AsyncIterable<VaultConnection>;
  close(): void;
}

/** Listens for QUIC connections with the given certificate chain and key. */
export function listenQuic(opts: {
  hostname: string;
  port: number;
  certChainPem: string;
  keyPem: string;
  idleTimeoutMs?: number;
  /**
   * TLS handshakes allowed in flight at once; an Initial beyond them is
   * refused before any connection state is made for it, so a handshake flood
   * costs a bounded amount of memory. Unbounded when absent.
   */
  maxHandshakes?: number;
  /** Called for each refused handshake (for the log). */
  onRefused?: () => void;
}): VaultListener {
  let endpoint: Deno.QuicEndpoint;
  try {
    endpoint = new Deno.QuicEndpoint({ hostname: opts.hostname, port: opts.port });
  } catch (err) {
    throw new VaultError(
      "transport.listen",
      `cannot listen on ${opts.hostname}:${opts.port}: ${(err as Error).message}`,
      "choose another address with --listen, or stop whatever holds that port",
    );
  }
  const listener = endpoint.listen({
    alpnProtocols: [ALPN],
    cert: opts.certChainPem,
    key: opts.keyPem,
    maxIdleTimeout: opts.idleTimeoutMs ?? SERVER_IDLE_TIMEOUT_MS,
    maxConcurrentBidirectionalStreams: MAX_STREAMS,
    congestionControl: CONGESTION_CONTROL,
  });
  // Larger kernel buffers than the default 208 KiB: a burst (a relay that was descheduled) waits
  // instead of being lost. Best effort, never an error (udp_buffers.ts).
  tuneEndpointSocket(endpoint.addr.port);
  return {
    addr: { hostname: endpoint.addr.hostname, port: endpoint.addr.port },
    async *connections() {
      // Handshakes run concurrently: one slow client must not hold up the next.
      const ready: VaultConnection[] = [];
      let wake: (() => void) | undefined;
      let stopped = false;
      let handshaking = 0;
      (async () => {
        while (true) {
          let incoming: Deno.QuicIncoming;
          try {
            incoming = await listener.incoming();
          } catch {
            break;
          }
          if (opts.maxHandshakes !== undefined && handshaking >= opts.maxHandshakes) {
            // Don't touch `remoteAddr` here: in Deno 2.9 reading it consumes the resource, and
            // refuse() would then throw (which ended the accept loop: init crashed).
            try {
              incoming.refuse();
            } catch { /* gone already */ }
            opts.onRefused?.();
            continue;
          }
          handshaking++;
          // A synchronous throw (a resource already gone) must not end the accept loop.
          new Promise<Deno.QuicConn>((resolve) => resolve(incoming.accept<false>())).then((c) => {
            ready.push(wrap(c, "server"));
            wake?.();
          }, () => {}).finally(() => handshaking--);
        }
        stopped = true;
        wake?.();
      })();
      while (true) {
        while (ready.length) yield ready.shift()!;
        if (stopped) return;
        await new Promise<void>((r) => wake = r);
        wake = undefined;
      }
    },
    close() {
      try {
        listener.stop();
      } catch { /* already */ }
      try {
        endpoint.close();
      } catch { /* already */ }
    },
  };
}

/** Why a dial failed, as far as QUIC can tell. */
export type DialFailure = "unreachable" | "certificate" | "other";

/** A dial error with its failure class, so the caller can decide to re-attest. */
export class DialError extends VaultError {
  override name = "DialError";
  constructor(readonly failure: DialFailure, code: string, message: string, hint: string) {
    super(code, message, hint);
  }
}

function classify(err: unknown): DialFailure {
  const text = String((err as Error)?.message ?? err);
  if (/certificate|BadSignature|UnknownIssuer|NotValidForName|CaUsedAsEndEntity|tls/i.test(text)) {
    return "certificate";
  }
  if (/timed? ?out|unreachable|refused|no route|dns|lookup|resolve/i.test(text)) {
    return "unreachable";
  }
  return "other";
}

/** Splits `host:port` / `[v6]:port`. */
export function parseAddress(address: string): PeerAddr {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(address) ?? /^([^:\[\]]+):(\d+)$/.exec(address);
  const port = m ? Number(m[2]) : NaN;
  if (!m || !(port >= 1 && port <= 65535)) {
    throw new VaultError(
      "config.bad_address",
      `address '${address}' is not host:port`,
      'write it as "host:port" or "[ipv6]:port", e.g. "[fdaa:0:1::2]:8443"',
    );
  }
  return { hostname: m[1], port };
}

/**
 * Connects to `address`, trusting only `caPem` (plus Mozilla's roots, which
 * can never vouch for a `.internal` name), with server name `serverName`.
 * `caCerts` only ADDS to the process's root store (`DENO_CERT` and friends:
 * see trust_env.ts), so this raw dial trusts those too; {@link dialVault},
 * the only path that leads to an access token, refuses to run in such a process.
 * Fails within `timeoutMs` rather than waiting out QUIC's idle timeout.
 */
export async function dialQuic(opts: {
  address: string;
  serverName: string;
  caPem: string;
  timeoutMs: number;
}): Promise<VaultConnection> {
  const { hostname, port } = parseAddress(opts.address);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const connecting: Promise<Deno.QuicConn> = Deno.connectQuic<false>({
    hostname,
    port,
    serverName: opts.serverName,
    alpnProtocols: [ALPN],
    caCerts: [opts.caPem],
    keepAliveInterval: CLIENT_KEEPALIVE_MS,
    maxIdleTimeout: CLIENT_IDLE_TIMEOUT_MS,
    maxConcurrentBidirectionalStreams: MAX_STREAMS,
    congestionControl: CONGESTION_CONTROL,
  });
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`timed out after ${opts.timeoutMs} ms`)),
      opts.timeoutMs,
    );
  });
  // Deno's QUIC client does not report ICMP port unreachable; our probe does.
  const probe = probeRefused(hostname, port);
  const refused = probe.refused.then((yes) =>
    yes ? Promise.reject(new RefusedError()) : new Promise<never>(() => {})
  );
  try {
    const conn = await Promise.race([connecting, timeout, refused]);
    tuneEndpointSocket(() => conn.endpoint.addr.port); // as the listener's: bursts wait, best effort
    return wrap(conn, "client");
  } catch (err) {
    // A connection that completes after we gave up must not linger.
    connecting.then((c) => c.close({ closeCode: 0, reason: "timeout" }), () => {});
    if (err instanceof RefusedError) {
      throw new DialError(
        "unreachable",
        "transport.refused",
        `cannot reach ${opts.address}: connection refused (nothing listens on UDP port ${port})`,
        "the host answered but no vault listens there: check the port in config.toml's address " +
          "and that the vault (or vault-proxy) is running",
      );
    }
    const failure = classify(err);
    const why = String((err as Error)?.message ?? err);
    throw failure === "certificate"
      ? new DialError(
        failure,
        "transport.certificate",
        `${opts.address} presented a certificate we do not trust (${why})`,
        "the machine's identity changed or this is not the machine; fly-vault attests again by itself",
      )
      : new DialError(
        failure,
        "transport.unreachable",
        `cannot reach ${opts.address}: ${why}`,
        "check the vault's address in config.toml, that the machine is started, and your network/WireGuard",
      );
  } finally {
    clearTimeout(timer);
    probe.stop();
  }
}

/** The probe heard ICMP port unreachable. */
class RefusedError extends Error {}
