/**
 * A bare Deno QUIC stream, no fly-vault framing or forward code: the
 * transport's own ceiling across a link, for the WAN bench (issue 10 item 4
 * compares forwards with it). Deno's QUIC API is used directly on purpose:
 * this measures what lies under src/transport. Each congestion controller
 * Deno offers can be asked for.
 *
 * A stream's first byte says what to do: `u` (the client sends until it
 * closes; the server answers with the byte count once it has them all) or
 * `d` (the server sends for the number of seconds in the second byte).
 *
 * @module
 */
import { createMachineIdentity, serverNameFor } from "../../src/pki/mod.ts";

const ALPN = "fly-vault-bench-bare";
const CHUNK = 64 * 1024;

/** Deno's congestion controllers: "default" and "throughput" are quinn's Cubic, "low-latency" its BBR. */
export type Congestion = "default" | "throughput" | "low-latency";
const CONTROLLERS: Congestion[] = ["default", "throughput", "low-latency"];

/** Where and how to reach the bare QUIC server: one port per congestion controller. */
export interface BareQuicServer {
  ports: Record<Congestion, number>;
  caPem: string;
  serverName: string;
}

/**
 * Serves bare streams on `hostname` until the process ends, one endpoint per
 * congestion controller: the sender's controller decides a direction's rate,
 * so both ends of a measurement use the same one.
 */
export async function serveBareQuic(hostname: string): Promise<BareQuicServer> {
  const id = await createMachineIdentity({ machineId: "bare" });
  const ports = {} as Record<Congestion, number>;
  for (const cc of CONTROLLERS) {
    const endpoint = new Deno.QuicEndpoint({ hostname, port: 0 });
    const listener = endpoint.listen({
      alpnProtocols: [ALPN],
      cert: id.chainPem,
      key: id.leafKeyPem,
      maxIdleTimeout: 30_000,
      congestionControl: cc,
    });
    ports[cc] = endpoint.addr.port;
    (async () => {
      while (true) {
        const conn = await listener.accept();
        (async () => {
          for await (const stream of conn.incomingBidirectionalStreams) {
            serveStream(stream).catch(() => {});
          }
        })().catch(() => {});
      }
    })().catch(() => {});
  }
  return { ports, caPem: id.identityPem, serverName: serverNameFor("bare") };
}

async function serveStream(stream: Deno.QuicBidirectionalStream): Promise<void> {
  const reader = stream.readable.getReader();
  const writer = stream.writable.getWriter();
  let head = new Uint8Array(0);
  let total = 0;
  while (head.length < 2) {
    const { value, done } = await reader.read();
    if (done) return;
    const joined = new Uint8Array(head.length + value.length);
    joined.set(head);
    joined.set(value, head.length);
    head = joined;
  }
  if (head[0] === 0x75 /* u */) {
    total = head.length - 2;
    while (true) {
      const { value, done } = await reader.read();
      if (done) break;
      total += value.length;
    }
    await writer.write(new TextEncoder().encode(`${total}\n`));
    await writer.close();
    return;
  }
  const until = performance.now() + head[1] * 1000;
  const chunk = new Uint8Array(CHUNK).fill(100);
  while (performance.now() < until) await writer.write(chunk);
  await writer.close();
}

/** Upload and download Mbit/s over one bare stream per direction, with congestion control `cc`. */
export async function bareQuicBulk(
  host: string,
  server: BareQuicServer,
  seconds: number,
  cc: Congestion,
): Promise<{ upload_mbit: number; download_mbit: number }> {
  const conn = await Deno.connectQuic({
    hostname: host,
    port: server.ports[cc],
    serverName: server.serverName,
    caCerts: [server.caPem],
    alpnProtocols: [ALPN],
    maxIdleTimeout: 30_000,
    congestionControl: cc,
  });
  try {
    // Upload: send for `seconds`, then wait for the server's count (all bytes arrived).
    const up = await conn.createBidirectionalStream();
    const w = up.writable.getWriter();
    const t0 = performance.now();
    await w.write(new Uint8Array([0x75, 0]));
    const chunk = new Uint8Array(CHUNK).fill(117);
    while (performance.now() - t0 < seconds * 1000) await w.write(chunk);
    await w.close();
    const answer = await new Response(up.readable).text();
    const upMbit = Number(answer.trim()) * 8 / ((performance.now() - t0) / 1000) / 1e6;

    const down = await conn.createBidirectionalStream();
    const dw = down.writable.getWriter();
    const t1 = performance.now();
    await dw.write(new Uint8Array([0x64, seconds]));
    await dw.close();
    let got = 0;
    for await (const part of down.readable) got += part.length;
    const downMbit = got * 8 / ((performance.now() - t1) / 1000) / 1e6;
    return { upload_mbit: +upMbit.toFixed(1), download_mbit: +downMbit.toFixed(1) };
  } finally {
    conn.close({ closeCode: 0, reason: "" });
  }
}
