/**
 * Sessions that survive a client's address change (issue 11.2): a real Deno
 * (quinn) QUIC client dials through a UDP relay that plays a NAT, then the
 * relay rebinds (its outbound socket, so the source port the proxy sees,
 * changes) in the middle of a 10 MiB echo. The proxy finds the session by the
 * packets' DCID (a connection ID the machine chose, learned from its long
 * headers) and moves it: no reconnect, every byte back. A stranger from a new
 * address whose DCID matches nothing moves nothing.
 */
import assert from "node:assert/strict";
import { startProxy } from "../src/proxy/mod.ts";
import { dial, startEchoServer } from "./proxy_fixture.ts";
import { startRebindingRelay } from "./proxy_relays.ts";

Deno.test({
  name: "proxy: a client whose address changes mid-transfer keeps its connection (DCID routing)",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const machine = "mig0rate0000001";
    const server = await startEchoServer(machine);
    const logs: Record<string, unknown>[] = [];
    const proxy = await startProxy({
      listen: { hostname: "127.0.0.1", port: 0 },
      resolver: () =>
        Promise.resolve({ ok: true, backend: { hostname: server.hostname, port: server.port } }),
      log: (e) => logs.push(e),
    });
    const relay = startRebindingRelay({ hostname: "127.0.0.1", port: proxy.port });
    let conn: Deno.QuicConn | undefined;
    try {
      conn = await dial({
        hostname: "127.0.0.1",
        port: relay.port,
        serverName: `${machine}.vault.internal`,
        caPem: server.identity.identityPem,
        // A loaded CI machine can stall a relay for seconds; the test is about migration.
        idleMs: 30_000,
      });
      const size = 10 * 1024 * 1024;
      const payload = new Uint8Array(size);
      for (let o = 0; o < size; o += 65536) crypto.getRandomValues(payload.subarray(o, o + 65536));
      const stream = await conn.createBidirectionalStream();
      const w = stream.writable.getWriter();
      const writing = (async () => {
        for (let o = 0; o < size; o += 64 * 1024) await w.write(payload.subarray(o, o + 64 * 1024));
        await w.close();
      })();
      // Awaited below; until then a failure must surface as this test's, not an uncaught error.
      writing.catch(() => {});
      const got = new Uint8Array(size);
      let n = 0;
      let rebinds = 0;
      const deadline = AbortSignal.timeout(60_000);
      for await (const chunk of stream.readable) {
        if (deadline.aborted) throw new Error(`echo stalled at ${n} bytes`);
        got.set(chunk, n);
        n += chunk.length;
        // Twice: a third and two thirds of the way, with data in flight both ways.
        if (rebinds < 2 && n >= ((rebinds + 1) * size) / 3) {
          relay.rebind();
          rebinds++;
        }
      }
      await writing;
      assert.equal(rebinds, 2);
      assert.equal(n, size, "every byte came back");
      assert.ok(got.every((b, i) => b === payload[i]), "the bytes are the ones sent");
      assert.equal(proxy.stats.opened, 1, "one session: the connection was never re-made");
      assert.equal(proxy.stats.events.migrated, 2, JSON.stringify(proxy.stats));
      // The first packet from each new address already found its session (quinn greases the
      // fixed bit, RFC 9287: the lookup must not insist on it).
      assert.deepEqual(proxy.stats.drops, {}, "no packet dropped");
      const moves = logs.filter((e) => e.event === "session_migrated");
      assert.deepEqual(
        moves.map((e) => e.client),
        relay.outbound.slice(1).map((p) => `127.0.0.1:${p}`),
      );

      // A stranger's short-header packet (a random DCID) from a new address moves nothing.
      const stranger = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
      const junk = crypto.getRandomValues(new Uint8Array(1200));
      junk[0] = 0x40 | (junk[0] & 0x3f);
      await stranger.send(junk, { transport: "udp", hostname: "127.0.0.1", port: proxy.port });
      stranger.close();
      assert.equal(await echoOnce(conn), "still here");
      assert.equal(proxy.stats.events.migrated, 2);
      assert.equal(proxy.stats.sessions, 1);
    } finally {
      conn?.close();
      relay.close();
      await proxy.close();
      server.close();
    }
  },
});

async function echoOnce(conn: Deno.QuicConn): Promise<string> {
  const s = await conn.createBidirectionalStream();
  const w = s.writable.getWriter();
  await w.write(new TextEncoder().encode("still here"));
  await w.close();
  let text = "";
  for await (const c of s.readable.pipeThrough(new TextDecoderStream())) text += c;
  return text;
}
