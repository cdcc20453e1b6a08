/**
 * Helpers of the proxy attack tests: raw UDP clients on any loopback address (127/8 is all
 * local, so a test can stand for several networks), a raw UDP "machine", and a fake Machines
 * API that counts what it is asked.
 *
 * @module
 */
import { clientHello, clientInitials } from "../src/proxy/testutil.ts";

/** One client Initial datagram naming `<id>.vault.internal`. */
export function initialFor(id: string, dcid?: Uint8Array): Uint8Array {
  return clientInitials(clientHello({ sni: `${id}.vault.internal` }), { dcid })[0];
}

/** The next datagram on `sock`, or undefined after `ms`. */
export async function receiveWithin(
  sock: Deno.DatagramConn,
  ms: number,
): Promise<{ data: Uint8Array; addr: Deno.NetAddr } | undefined> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<undefined>((r) => timer = setTimeout(() => r(undefined), ms));
  try {
    const got = await Promise.race([sock.receive().catch(() => undefined), timeout]);
    return got ? { data: got[0], addr: got[1] as Deno.NetAddr } : undefined;
  } finally {
    clearTimeout(timer);
  }
}

/** A UDP socket on `hostname` (any 127.x.y.z). */
export function udpOn(hostname = "127.0.0.1"): Deno.DatagramConn {
  return Deno.listenDatagram({ transport: "udp", hostname, port: 0 });
}

/** Sends `data` to `port` on 127.0.0.1 from `sock`. */
export async function sendTo(sock: Deno.DatagramConn, data: Uint8Array, port: number) {
  await sock.send(data, { transport: "udp", hostname: "127.0.0.1", port });
}

/**
 * Sends one Initial for `id` from a fresh socket on `host` and waits up to `ms` for the proxy's
 * answer (a CONNECTION_CLOSE when refused); undefined when none came.
 */
export async function askOnce(
  proxyPort: number,
  id: string,
  host = "127.0.0.1",
  ms = 3_000,
): Promise<Uint8Array | undefined> {
  const sock = udpOn(host);
  try {
    await sendTo(sock, initialFor(id), proxyPort);
    return (await receiveWithin(sock, ms))?.data;
  } finally {
    sock.close();
  }
}

/** A fake Machines API for app `app`, counting requests by "METHOD /suffix". */
export interface FakeApi {
  url: string;
  counts: Map<string, number>;
  total(): number;
  close(): Promise<void>;
}

/** The machines the fake API knows: id → its GET reply. */
export type FakeMachines = Record<string, Record<string, unknown>>;

/** Starts a fake Machines API on 127.0.0.1 answering from `machines` (404 for the rest). */
export function startFakeApi(app: string, machines: FakeMachines): Promise<FakeApi> {
  const counts = new Map<string, number>();
  const count = (k: string) => counts.set(k, (counts.get(k) ?? 0) + 1);
  return new Promise((resolve) => {
    const server = Deno.serve({
      hostname: "127.0.0.1",
      port: 0,
      onListen(addr) {
        resolve({
          url: `http://127.0.0.1:${addr.port}`,
          counts,
          total: () => [...counts.values()].reduce((a, b) => a + b, 0),
          close: () => server.shutdown(),
        });
      },
    }, (req) => {
      const u = new URL(req.url);
      const m = u.pathname.match(/^\/v1\/apps\/([^/]+)\/machines\/([^/]+)(\/[a-z]+)?$/);
      if (!m || m[1] !== app) return new Response("no", { status: 404 });
      const suffix = m[3] ?? "";
      count(`${req.method} ${suffix || "/"}`);
      const machine = machines[m[2]];
      if (!machine) return Response.json({ error: "not found" }, { status: 404 });
      if (suffix === "/start") return Response.json({ ok: true });
      if (suffix === "/wait") return Response.json({ ok: true });
      return Response.json(machine);
    });
  });
}
