/**
 * Round trips per forwarded connection, on the real QUIC transport through
 * a UDP relay that delays every datagram by a fixed time each way (a 40 ms
 * round trip on loopback). A new forwarded connection's first request must
 * cost about one round trip more than nothing: the client sends the
 * connection's bytes right behind the forward header instead of waiting for
 * `forward_ok` (which cost a whole extra round trip per connection).
 */
import assert from "node:assert/strict";
import { serveForward, startForward } from "../src/forward/mod.ts";
import { createMachineIdentity, serverNameFor } from "../src/pki/mod.ts";
import { FrameReader, FrameWriter, StreamTag } from "../src/protocol/mod.ts";
import { dialQuic, listenQuic } from "../src/transport/mod.ts";

const ONE_WAY_MS = 20;
const RTT_MS = 2 * ONE_WAY_MS;

/** Relays one client's datagrams to `port` and back, each held `ONE_WAY_MS`. */
function delayRelay(port: number) {
  const front = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const back = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  let client: Deno.NetAddr | undefined;
  const timers = new Set<ReturnType<typeof setTimeout>>();
  const later = (f: () => void) => {
    const t = setTimeout(() => {
      timers.delete(t);
      f();
    }, ONE_WAY_MS);
    timers.add(t);
  };
  const pumps = [
    (async () => {
      for await (const [d, from] of front) {
        client = from as Deno.NetAddr;
        later(() =>
          back.send(d, { transport: "udp", hostname: "127.0.0.1", port }).catch(() => {})
        );
      }
    })().catch(() => {}),
    (async () => {
      for await (const [d] of back) {
        const to = client;
        if (to) later(() => front.send(d, to).catch(() => {}));
      }
    })().catch(() => {}),
  ];
  return {
    port: (front.addr as Deno.NetAddr).port,
    async close() {
      front.close();
      back.close();
      for (const t of timers) clearTimeout(t);
      await Promise.all(pumps);
    },
  };
}

/** Answers each line `N\n` with N bytes, on keep-alive connections. */
function requestServer() {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.Conn>();
  const accepting = (async () => {
    for await (const c of listener) {
      conns.add(c);
      c.setNoDelay(true);
      (async () => {
        const buf = new Uint8Array(1024);
        let line = "";
        while (true) {
          const n = await c.read(buf);
          if (n === null) break;
          line += new TextDecoder().decode(buf.subarray(0, n));
          for (let i = line.indexOf("\n"); i >= 0; i = line.indexOf("\n")) {
            const size = Number(line.slice(0, i));
            line = line.slice(i + 1);
            await c.write(new Uint8Array(size));
          }
        }
      })().catch(() => {}).finally(() => conns.delete(c));
    }
  })().catch(() => {});
  return {
    port: (listener.addr as Deno.NetAddr).port,
    async close() {
      listener.close();
      for (const c of conns) c.close();
      await accepting;
    },
  };
}

/** Ms for one request of `bytes` on `c`. */
async function ask(c: Deno.Conn, bytes: number): Promise<number> {
  const t0 = performance.now();
  await c.write(new TextEncoder().encode(`${bytes}\n`));
  const buf = new Uint8Array(64 * 1024);
  let got = 0;
  while (got < bytes) {
    const n = await c.read(buf);
    if (n === null) throw new Error("the forwarded connection closed mid-answer");
    got += n;
  }
  return performance.now() - t0;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1];

Deno.test({
  name:
    "forward rtt: a new forwarded connection's first request costs ~1 round trip over a warm one (no wait for forward_ok)",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const id = await createMachineIdentity({ machineId: "m-fwd-rtt" });
    const listener = listenQuic({
      hostname: "127.0.0.1",
      port: 0,
      certChainPem: id.chainPem,
      keyPem: id.leafKeyPem,
    });
    const serving = (async () => {
      for await (const conn of listener.connections()) {
        (async () => {
          for await (const stream of conn.incoming()) {
            if (stream.tag !== StreamTag.forward) continue;
            serveForward(new FrameReader(stream.readable), new FrameWriter(stream.writable))
              .catch(() => {});
          }
        })();
      }
    })();
    const relay = delayRelay(listener.addr.port);
    const server = requestServer();
    const conn = await dialQuic({
      address: `127.0.0.1:${relay.port}`,
      serverName: serverNameFor("m-fwd-rtt"),
      caPem: id.identityPem,
      timeoutMs: 5000,
    });
    const fwd = startForward((tag) => conn.openStream(tag), `0:127.0.0.1:${server.port}`);
    try {
      const fresh: number[] = [];
      const warm: number[] = [];
      for (let i = 0; i < 5; i++) {
        const c = await Deno.connect({ hostname: "127.0.0.1", port: fwd.addr.port });
        try {
          c.setNoDelay(true);
          fresh.push(await ask(c, 1024));
          warm.push(await ask(c, 1024));
        } finally {
          c.close();
        }
      }
      const [f, w] = [median(fresh), median(warm)];
      // A warm request is one round trip; waiting for forward_ok made a new one ~2.4.
      assert.ok(w < 2 * RTT_MS, `a warm request took ${w.toFixed(0)} ms (RTT ${RTT_MS} ms)`);
      assert.ok(
        f - w < 0.6 * RTT_MS,
        `a new connection's first request took ${f.toFixed(0)} ms, a warm one ${
          w.toFixed(0)
        } ms: over half a round trip (${RTT_MS} ms) more`,
      );
    } finally {
      await fwd.close();
      await conn.close();
      listener.close();
      await serving;
      await relay.close();
      await server.close();
    }
  },
});
