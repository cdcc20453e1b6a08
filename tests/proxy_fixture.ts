/**
 * Fixtures for the proxy tests and bench: a Deno QUIC echo server with a
 * machine identity for `<id>.vault.internal`, a client dialling it, and a
 * raw UDP socket that captures a real client's Initial datagrams.
 *
 * @module
 */
import { createMachineIdentity, type MachineIdentity } from "../src/pki/mod.ts";

export const ALPN = "fly-vault/1";

/** A QUIC echo server: every bidirectional stream gets its bytes back. */
export interface EchoServer {
  hostname: string;
  port: number;
  identity: MachineIdentity;
  close(): void;
}

/** Starts an echo server for `machineId` on 127.0.0.1. */
export async function startEchoServer(
  machineId: string,
  hostname = "127.0.0.1",
  port = 0,
): Promise<EchoServer> {
  const identity = await createMachineIdentity({ machineId });
  const endpoint = new Deno.QuicEndpoint({ hostname, port });
  const listener = endpoint.listen({
    alpnProtocols: [ALPN],
    cert: identity.chainPem,
    key: identity.leafKeyPem,
  });
  (async () => {
    try {
      while (true) {
        const incoming = await listener.incoming();
        Promise.resolve(incoming.accept<false>()).then(async (conn) => {
          try {
            for await (const stream of conn.incomingBidirectionalStreams) {
              stream.readable.pipeTo(stream.writable).catch(() => {});
            }
          } catch {
            // connection gone
          }
        }, () => {});
      }
    } catch {
      // endpoint closed
    }
  })();
  return {
    hostname: endpoint.addr.hostname,
    port: endpoint.addr.port,
    identity,
    close() {
      try {
        listener.stop();
        endpoint.close();
      } catch {
        // closed
      }
    },
  };
}

/** Dials `host:port` with SNI `serverName`, trusting `caPem`. */
export function dial(opts: {
  hostname: string;
  port: number;
  serverName: string;
  caPem: string;
  alpn?: string[];
  idleMs?: number;
}): Promise<Deno.QuicConn> {
  return Deno.connectQuic<false>({
    hostname: opts.hostname,
    port: opts.port,
    serverName: opts.serverName,
    alpnProtocols: opts.alpn ?? [ALPN],
    caCerts: [opts.caPem],
    maxIdleTimeout: opts.idleMs ?? 5_000,
  });
}

/** Round-trips `data` on a new stream; returns what came back. */
export async function echo(conn: Deno.QuicConn, data: Uint8Array): Promise<Uint8Array> {
  const s = await conn.createBidirectionalStream();
  const w = s.writable.getWriter();
  await w.write(data);
  await w.close();
  const parts: Uint8Array[] = [];
  for await (const c of s.readable) parts.push(c);
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/**
 * Lets a real Deno QUIC client dial a raw UDP socket and hands each datagram
 * to `onDatagram` (with a `reply` to answer) until it returns true; then
 * returns the datagrams and how the client's connect ended.
 */
export async function captureClient(opts: {
  serverName: string;
  alpn?: string[];
  onDatagram: (
    d: Uint8Array,
    all: Uint8Array[],
    reply: (b: Uint8Array) => Promise<void>,
  ) => boolean | Promise<boolean>;
}): Promise<{ datagrams: Uint8Array[]; error: Error | undefined; ms: number }> {
  const sock = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const addr = sock.addr as Deno.NetAddr;
  const { identity } = await fakeIdentity();
  const started = performance.now();
  const connecting = dial({
    hostname: "127.0.0.1",
    port: addr.port,
    serverName: opts.serverName,
    caPem: identity.identityPem,
    alpn: opts.alpn,
    idleMs: 3_000,
  }).then((c) => {
    c.close();
    return undefined;
  }, (e: Error) => e);
  const datagrams: Uint8Array[] = [];
  let ms = 0;
  try {
    while (true) {
      const [d, from] = await sock.receive();
      datagrams.push(d);
      const reply = async (b: Uint8Array) => {
        await sock.send(b, from);
      };
      if (await opts.onDatagram(d, datagrams, reply)) break;
    }
    const error = await connecting;
    ms = performance.now() - started;
    return { datagrams, error, ms };
  } finally {
    sock.close();
  }
}

let cachedIdentity: Promise<{ identity: MachineIdentity }> | undefined;
function fakeIdentity() {
  return cachedIdentity ??= createMachineIdentity({ machineId: "capture" }).then((identity) => ({
    identity,
  }));
}

/**
 * Creates a machine through a (flysim) Machines API, as the admin would, and
 * waits until it is started. Returns its id.
 */
export async function createStartedMachine(
  api: { baseUrl: string; app: string; token: string },
  name: string,
  env: Record<string, string>,
): Promise<string> {
  const headers = { authorization: `Bearer ${api.token}`, "content-type": "application/json" };
  const base = `${api.baseUrl}/v1/apps/${api.app}/machines`;
  const created = await fetch(base, {
    method: "POST",
    headers,
    body: JSON.stringify({
      name,
      region: "ord",
      config: { image: "registry.fly.io/vault-tenants/init:test", env },
    }),
  }).then((r) => r.json());
  const waited = await fetch(`${base}/${created.id}/wait?state=started&timeout=30`, { headers });
  await waited.body?.cancel();
  if (waited.status !== 200) {
    throw new Error(`machine ${created.id} did not start: ${waited.status}`);
  }
  return created.id;
}
