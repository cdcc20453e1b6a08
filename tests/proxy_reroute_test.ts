/**
 * Routes that follow the machine (issue 11.5): a machine restarted at a new
 * address while the proxy still has its old address cached is reachable
 * within 2 s of being up. The proxy notices the handshake went unanswered for
 * `noAnswerMs`, drops the cached answer, looks the machine up again and hands
 * the client's Initials to the new address. A machine found stopped on that
 * second look gives the client a CONNECTION_CLOSE saying so.
 */
import assert from "node:assert/strict";
import { cachedResolver, type Resolution, startProxy } from "../src/proxy/mod.ts";
import { dial, echo, startEchoServer } from "./proxy_fixture.ts";
import { startUdpRelay, type UdpRelay } from "./console_udp_relay.ts";

Deno.test({
  name: "proxy: a machine restarted at a new address is reachable within 2 s, despite the cache",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const machine = "re0route000001";
    const first = await startEchoServer(machine);
    // The old address: a relay to the first server, so the test can make it vanish at once (a
    // closed QUIC endpoint lingers to drain its connections).
    const oldAddress: UdpRelay = startUdpRelay({ hostname: first.hostname, port: first.port });
    let answer: Resolution = {
      ok: true,
      backend: { hostname: "127.0.0.1", port: Number(oldAddress.address.split(":")[1]) },
    };
    let lookups = 0;
    const logs: Record<string, unknown>[] = [];
    const proxy = await startProxy({
      listen: { hostname: "127.0.0.1", port: 0 },
      // A 30 s cache, as vault-proxy's: the stale address would last that long.
      resolver: cachedResolver(() => {
        lookups++;
        return Promise.resolve(answer);
      }, { ttlMs: 30_000 }),
      log: (e) => logs.push(e),
    });
    const sni = `${machine}.vault.internal`;
    let second: Awaited<ReturnType<typeof startEchoServer>> | undefined;
    const relays = [oldAddress];
    try {
      const c1 = await dial({
        hostname: "127.0.0.1",
        port: proxy.port,
        serverName: sni,
        caPem: first.identity.identityPem,
      });
      assert.equal(
        new TextDecoder().decode(await echo(c1, new TextEncoder().encode("one"))),
        "one",
      );
      c1.close();
      assert.equal(lookups, 1);

      // The machine restarts elsewhere (a new port stands in for a new private IP).
      oldAddress.drop(true);
      first.close();
      second = await startEchoServer(machine);
      const newAddress = startUdpRelay({ hostname: second.hostname, port: second.port });
      relays.push(newAddress);
      const newPort = Number(newAddress.address.split(":")[1]);
      answer = { ok: true, backend: { hostname: "127.0.0.1", port: newPort } };
      const up = performance.now();
      const c2 = await dial({
        hostname: "127.0.0.1",
        port: proxy.port,
        serverName: sni,
        caPem: second.identity.identityPem,
      });
      const reachedMs = performance.now() - up;
      assert.equal(
        new TextDecoder().decode(await echo(c2, new TextEncoder().encode("two"))),
        "two",
      );
      c2.close();
      assert.ok(reachedMs < 2_000, `reached ${Math.round(reachedMs)} ms after it was up`);
      assert.equal(lookups, 2, "looked up again once");
      assert.equal(proxy.stats.events.rerouted, 1);
      const moved = logs.find((e) => e.event === "session_rerouted");
      assert.equal(moved?.backend, `127.0.0.1:${newPort}`);
      console.log(`reroute: reachable ${Math.round(reachedMs)} ms after the restart`);

      // Now stopped (and this resolver does not wake): the client is told, not left to time out.
      newAddress.drop(true);
      answer = { ok: false, reason: "stopped", detail: `machine ${machine} is stopped` };
      const t0 = performance.now();
      const err = await dial({
        hostname: "127.0.0.1",
        port: proxy.port,
        serverName: sni,
        caPem: second.identity.identityPem,
        idleMs: 8_000,
      }).then(() => undefined, (e: Error) => e);
      const failMs = performance.now() - t0;
      assert.ok(err, "the connect failed");
      assert.match(String(err), /is stopped; this proxy does not wake machines/);
      assert.ok(failMs < 3_000, `told after ${Math.round(failMs)} ms`);
      assert.equal(proxy.stats.refusals.stopped, 1);
    } finally {
      await proxy.close();
      for (const r of relays) r.close();
      first.close();
      second?.close();
    }
  },
});

Deno.test({
  name: "proxy: many unanswered handshakes to one machine cost one fresh lookup a second",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const machine = "bl4ckhole00001";
    // A machine that never answers (a socket nobody reads).
    const hole = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
    const backend = { hostname: "127.0.0.1", port: (hole.addr as Deno.NetAddr).port };
    let lookups = 0;
    const proxy = await startProxy({
      listen: { hostname: "127.0.0.1", port: 0 },
      resolver: cachedResolver(() => {
        lookups++;
        return Promise.resolve({ ok: true, backend });
      }),
      log: () => {},
    });
    const other = await startEchoServer("unused");
    const ca = other.identity.identityPem;
    try {
      const started = performance.now();
      const dials = Array.from({ length: 20 }, () =>
        dial({
          hostname: "127.0.0.1",
          port: proxy.port,
          serverName: `${machine}.vault.internal`,
          caPem: ca,
          idleMs: 3_000,
        }).then((c) => c.close(), () => {}));
      await Promise.all(dials);
      const secs = (performance.now() - started) / 1000;
      assert.equal(proxy.stats.opened, 20);
      // One at the start, then at most one fresh lookup per second (not one per session).
      assert.ok(lookups <= 2 + Math.ceil(secs), `${lookups} lookups in ${secs.toFixed(1)} s`);
      assert.ok(lookups >= 2, "the unanswered handshakes were looked up again");
    } finally {
      await proxy.close();
      hole.close();
      other.close();
    }
  },
});
