/**
 * One small UDP socket interface over three implementations: Deno's own
 * `Deno.listenDatagram` and `node:dgram` (one datagram per call, through the
 * event loop), and "mmsg", the batched path (`recvmmsg`/`sendmmsg` through
 * FFI to libc, see udp_mmsg.ts). The relay is written once against this, and
 * the benchmark measures each. "auto" is mmsg where this process may use FFI
 * on Linux, else deno.
 *
 * @module
 */
import dgram from "node:dgram";
import { isIPv6 } from "node:net";
import { bindMmsg, mmsgAvailable } from "./udp_mmsg.ts";

/** Which UDP implementation to use. */
export type UdpImpl = "deno" | "node" | "mmsg" | "auto";

/** Every value of {@link UdpImpl}, for flag parsing. */
export const UDP_IMPLS: readonly UdpImpl[] = ["auto", "mmsg", "deno", "node"];

/**
 * The implementation "auto" stands for here: the batched path when FFI is permitted on Linux,
 * else Deno's. An explicit choice is kept as it is (mmsg without FFI fails at bind, loudly).
 */
export function resolveUdpImpl(impl: UdpImpl): Exclude<UdpImpl, "auto"> {
  if (impl !== "auto") return impl;
  return mmsgAvailable() ? "mmsg" : "deno";
}

/** Called for each datagram received. `data` may be reused after the call returns (copy to keep). */
export type OnDatagram = (data: Uint8Array, hostname: string, port: number) => void;

/** A bound UDP socket. */
export interface UdpSocket {
  readonly hostname: string;
  readonly port: number;
  /** Sends without waiting; false when the datagram was dropped (send queue full or closed). */
  send(data: Uint8Array, hostname: string, port: number): boolean;
  close(): void;
  /** Resolves once the receive loop has ended. */
  readonly done: Promise<void>;
}

/** Sends in flight before new ones are dropped: UDP may drop, memory must not grow. */
const MAX_IN_FLIGHT = 4096;

/** Binds a UDP socket on `hostname:port` (port 0: any). */
export function bindUdp(
  impl: UdpImpl,
  hostname: string,
  port: number,
  onDatagram: OnDatagram,
  /**
   * recvBuffer: the largest datagram received whole (default 4096; QUIC stays ≤ 1452).
   * onError: a receive error that did not close the socket (ENOBUFS, ENOMEM...); the socket
   * keeps receiving.
   */
  opts: { recvBuffer?: number; onError?: (err: unknown) => void } = {},
): Promise<UdpSocket> {
  const which = resolveUdpImpl(impl);
  if (which === "mmsg") {
    // An ephemeral port is a relay's upstream socket: a smaller kernel buffer cap per session.
    return bindMmsg(hostname, port, onDatagram, { ...opts, upstream: port === 0 });
  }
  return which === "deno"
    ? bindDeno(hostname, port, onDatagram, opts.recvBuffer ?? 4096, opts.onError)
    : bindNode(hostname, port, onDatagram, opts.onError);
}

function bindDeno(
  hostname: string,
  port: number,
  on: OnDatagram,
  recvBuffer: number,
  onError?: (err: unknown) => void,
): Promise<UdpSocket> {
  const conn = Deno.listenDatagram({ transport: "udp", hostname, port });
  const addr = conn.addr as Deno.NetAddr;
  let closed = false;
  let inFlight = 0;
  const done = (async () => {
    let failures = 0;
    while (!closed) {
      let got: [Uint8Array, Deno.Addr];
      try {
        // Deno's default is a fresh 64 KiB buffer per pending receive: 64 KiB per idle session,
        // and zeroing 64 KiB per datagram roughly halved relay throughput in the bench. A fresh
        // buffer each time (not one reused) because a send holds a view until it completes.
        got = await conn.receive(new Uint8Array(recvBuffer));
      } catch (err) {
        // A closed socket ends the loop; anything else (ENOBUFS, ENOMEM, an ICMP error) must
        // not silently stop the proxy's public socket: report it and receive again, pausing
        // briefly when errors repeat so a persistent one cannot spin a core.
        if (
          closed || err instanceof Deno.errors.BadResource || err instanceof Deno.errors.Interrupted
        ) break;
        onError?.(err);
        if (++failures > 3) await new Promise((r) => setTimeout(r, Math.min(1000, failures * 10)));
        continue;
      }
      failures = 0;
      const a = got[1] as Deno.NetAddr;
      try {
        on(got[0], a.hostname, a.port);
      } catch (err) {
        onError?.(err); // a bug in the handler is reported, and the socket keeps serving
      }
    }
  })();
  return Promise.resolve({
    hostname: addr.hostname,
    port: addr.port,
    send(data, hostname, port) {
      if (closed || inFlight >= MAX_IN_FLIGHT) return false;
      inFlight++;
      conn.send(data, { transport: "udp", hostname, port }).then(
        () => inFlight--,
        () => inFlight--,
      );
      return true;
    },
    close() {
      if (closed) return;
      closed = true;
      try {
        conn.close();
      } catch {
        // already closed
      }
    },
    done,
  });
}

function bindNode(
  hostname: string,
  port: number,
  on: OnDatagram,
  onError?: (err: unknown) => void,
): Promise<UdpSocket> {
  const v6 = isIPv6(hostname) || hostname === "::";
  const sock = dgram.createSocket({ type: v6 ? "udp6" : "udp4", ipv6Only: false });
  let closed = false;
  let inFlight = 0;
  let resolveDone: () => void;
  const done = new Promise<void>((r) => resolveDone = r);
  sock.on("message", (msg: Uint8Array, rinfo: { address: string; port: number }) => {
    on(msg, rinfo.address, rinfo.port);
  });
  sock.on("close", () => resolveDone());
  return new Promise((resolve, reject) => {
    sock.once("error", reject);
    sock.bind(port, hostname, () => {
      sock.off("error", reject);
      // Per-send errors (ICMP unreachable) and resource errors are not fatal.
      sock.on("error", (err: unknown) => onError?.(err));
      const a = sock.address();
      resolve({
        hostname: a.address,
        port: a.port,
        send(data, host, p) {
          if (closed || inFlight >= MAX_IN_FLIGHT) return false;
          inFlight++;
          sock.send(data, p, host, () => inFlight--);
          return true;
        },
        close() {
          if (closed) return;
          closed = true;
          try {
            sock.close();
          } catch {
            resolveDone();
          }
        },
        done,
      });
    });
  });
}
