/**
 * One small UDP socket interface over the two implementations Deno offers:
 * its own `Deno.listenDatagram` and `node:dgram`. The relay is written once
 * against this, and the benchmark measures both (DESIGN §2 asks for it).
 *
 * @module
 */
import dgram from "node:dgram";
import { isIPv6 } from "node:net";

/** Which UDP implementation to use. */
export type UdpImpl = "deno" | "node";

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
  /** recvBuffer: the largest datagram received whole (default 4096; QUIC stays ≤ 1452). */
  opts: { recvBuffer?: number } = {},
): Promise<UdpSocket> {
  return impl === "deno"
    ? bindDeno(hostname, port, onDatagram, opts.recvBuffer ?? 4096)
    : bindNode(hostname, port, onDatagram);
}

function bindDeno(
  hostname: string,
  port: number,
  on: OnDatagram,
  recvBuffer: number,
): Promise<UdpSocket> {
  const conn = Deno.listenDatagram({ transport: "udp", hostname, port });
  const addr = conn.addr as Deno.NetAddr;
  let closed = false;
  let inFlight = 0;
  const done = (async () => {
    try {
      while (!closed) {
        // Deno's default is a fresh 64 KiB buffer per pending receive: 64 KiB per idle session,
        // and zeroing 64 KiB per datagram roughly halved relay throughput in the bench. A fresh
        // buffer each time (not one reused) because a send holds a view until it completes.
        const [data, from] = await conn.receive(new Uint8Array(recvBuffer));
        const a = from as Deno.NetAddr;
        on(data, a.hostname, a.port);
      }
    } catch {
      // closed
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

function bindNode(hostname: string, port: number, on: OnDatagram): Promise<UdpSocket> {
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
      sock.on("error", () => {}); // per-send errors (ICMP unreachable) are not fatal
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
