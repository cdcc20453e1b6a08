/**
 * The proxy bench's QUIC endpoints as fly-vault's own: the client dials with dialQuic's options
 * (BBR, stream limit) and the same socket tuning; `--endpoint-buffers` compares with the
 * kernel's default buffers (before the transport tuned them) or a given size.
 */
import { CONGESTION_CONTROL, MAX_STREAMS } from "../src/transport/quic.ts";
import {
  readUdpBuffers,
  setUdpBuffers,
  type SocketBuffers,
  tuneEndpointSocket,
} from "../src/transport/udp_buffers.ts";
import { ALPN } from "../src/protocol/mod.ts";

/**
 * Sets the buffers of this process's endpoint at `port`: "transport" (what listenQuic/dialQuic
 * set), "kernel" (net.core.rmem_default/wmem_default) or a byte count. Returns what it has.
 */
export function endpointBuffers(port: number, mode: string): SocketBuffers | undefined {
  if (mode === "transport") return tuneEndpointSocket(port) ?? readUdpBuffers(port);
  if (mode === "kernel") {
    // The kernel reports twice what is set: half the default gives the default back.
    const def = Number(Deno.readTextFileSync("/proc/sys/net/core/rmem_default").trim());
    return setUdpBuffers(port, def / 2);
  }
  return setUdpBuffers(port, Number(mode));
}

/** Dials as dialQuic does (same options), then sets the endpoint's buffers as `mode` says. */
export async function dialEndpoint(opts: {
  port: number;
  serverName: string;
  caPem: string;
  buffers: string;
}): Promise<{ conn: Deno.QuicConn; buffers?: SocketBuffers }> {
  const conn = await Deno.connectQuic<false>({
    hostname: "127.0.0.1",
    port: opts.port,
    serverName: opts.serverName,
    alpnProtocols: [ALPN],
    caCerts: [opts.caPem],
    maxIdleTimeout: 30_000,
    maxConcurrentBidirectionalStreams: MAX_STREAMS,
    congestionControl: CONGESTION_CONTROL,
  });
  return { conn, buffers: endpointBuffers(conn.endpoint.addr.port, opts.buffers) };
}
