/**
 * The proxy relaying real Deno QUIC connections to QUIC echo servers by the
 * SNI `<id>.vault.internal`, refusing unknown machines fast, and dropping and
 * counting what it cannot route. Run once per UDP implementation.
 */
import assert from "node:assert/strict";
import {
  type LogEvent,
  type Proxy,
  type Resolver,
  startAdmin,
  startProxy,
  type UdpImpl,
} from "../src/proxy/mod.ts";
import { clientHello, clientInitials } from "../src/proxy/testutil.ts";
import { dial, echo, type EchoServer, startEchoServer } from "./proxy_fixture.ts";

function mapResolver(servers: Record<string, EchoServer>): Resolver {
  return (id) => {
    const s = servers[id];
    return Promise.resolve(
      s
        ? { ok: true, backend: { hostname: s.hostname, port: s.port } }
        : { ok: false, reason: "unknown", detail: `no machine ${id}` },
    );
  };
}

/** A log sink tests can wait on. */
function logSink() {
  const events: LogEvent[] = [];
  const waiters: { match: (e: LogEvent) => boolean; resolve: (e: LogEvent) => void }[] = [];
  return {
    events,
    log(e: LogEvent) {
      events.push(e);
      for (const w of [...waiters]) {
        if (w.match(e)) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(e);
        }
      }
    },
    waitFor(match: (e: LogEvent) => boolean): Promise<LogEvent> {
      const hit = events.find(match);
      if (hit) return Promise.resolve(hit);
      return new Promise((resolve) => waiters.push({ match, resolve }));
    },
  };
}

/** Sends raw datagrams from a fresh socket, then waits for any reply to `last` (or none). */
async function sendRaw(proxy: Proxy, datagrams: Uint8Array[], last?: Uint8Array) {
  const sock = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const to = { transport: "udp" as const, hostname: "127.0.0.1", port: proxy.port };
  try {
    for (const d of datagrams) await sock.send(d, to);
    if (!last) return undefined;
    await sock.send(last, to);
    const [reply] = await sock.receive();
    return reply;
  } finally {
    sock.close();
  }
}

/** A valid client Initial for a machine nobody has: the proxy answers it, which marks "processed". */
function probe(): Uint8Array {
  return clientInitials(clientHello({ sni: "nobody.vault.internal" }))[0];
}

for (const udp of ["deno", "mmsg", "node"] as UdpImpl[]) {
  // Under Deno, node:dgram loses the first datagram a new upstream socket relays (the client's
  // Initial; QUIC recovers after its 1 s PTO), so the relay runs on Deno's UDP and the batched
  // path only; node:dgram still faces clients in the refusal and drop tests below.
  if (udp !== "node") {
    Deno.test(`relay (${udp}): two machines behind one proxy, each client reaches its own`, async () => {
      const a = await startEchoServer("aaaa0000000001");
      const b = await startEchoServer("bbbb0000000002");
      const sink = logSink();
      const proxy = await startProxy({
        listen: { hostname: "127.0.0.1", port: 0 },
        resolver: mapResolver({ aaaa0000000001: a, bbbb0000000002: b }),
        udp,
        log: sink.log,
      });
      try {
        const [ca, cb] = await Promise.all([
          dial({
            hostname: "127.0.0.1",
            port: proxy.port,
            serverName: "aaaa0000000001.vault.internal",
            caPem: a.identity.identityPem,
          }),
          dial({
            hostname: "127.0.0.1",
            port: proxy.port,
            serverName: "bbbb0000000002.vault.internal",
            caPem: b.identity.identityPem,
          }),
        ]);
        const big = new Uint8Array(256 * 1024).map((_, i) => (i * 7) & 0xff);
        const [ra, rb] = await Promise.all([
          echo(ca, big),
          echo(cb, new TextEncoder().encode("hi b")),
        ]);
        assert.deepEqual(ra, big);
        assert.equal(new TextDecoder().decode(rb), "hi b");
        assert.equal(proxy.stats.sessions, 2);
        const opened = sink.events.filter((e) => e.event === "session_open").map((e) => e.machine);
        assert.deepEqual(opened.sort(), ["aaaa0000000001", "bbbb0000000002"]);
        assert.ok(proxy.stats.packetsToMachine > 100 && proxy.stats.packetsToClient > 100);
        ca.close();
        cb.close();
      } finally {
        await proxy.close();
        a.close();
        b.close();
      }
    });

    Deno.test(`relay (${udp}): a ClientHello over two Initial packets is routed`, async () => {
      const a = await startEchoServer("cccc0000000003");
      const proxy = await startProxy({
        listen: { hostname: "127.0.0.1", port: 0 },
        resolver: mapResolver({ cccc0000000003: a }),
        udp,
        log: () => {},
      });
      try {
        const alpn = [
          ...Array.from({ length: 12 }, (_, i) => `p${i}-${"y".repeat(90)}`),
          "fly-vault/1",
        ];
        const conn = await dial({
          hostname: "127.0.0.1",
          port: proxy.port,
          serverName: "cccc0000000003.vault.internal",
          caPem: a.identity.identityPem,
          alpn,
        });
        assert.equal(
          new TextDecoder().decode(await echo(conn, new TextEncoder().encode("split"))),
          "split",
        );
        conn.close();
      } finally {
        await proxy.close();
        a.close();
      }
    });
  }

  Deno.test(`relay (${udp}): unknown machine fails the client within 1 s, with the reason`, async () => {
    const proxy = await startProxy({
      listen: { hostname: "127.0.0.1", port: 0 },
      resolver: mapResolver({}),
      udp,
      log: () => {},
    });
    const a = await startEchoServer("dddd0000000004");
    try {
      const t0 = performance.now();
      const err = await dial({
        hostname: "127.0.0.1",
        port: proxy.port,
        serverName: "dddd0000000004.vault.internal",
        caPem: a.identity.identityPem,
      }).then((c) => {
        c.close();
        return undefined;
      }, (e: Error) => e);
      const ms = performance.now() - t0;
      assert.ok(err);
      assert.match(err.message, /unknown machine dddd0000000004/);
      assert.ok(ms < 1000, `${ms} ms`);
      assert.equal(proxy.stats.refusals.unknown_machine, 1);
      assert.equal(proxy.stats.sessions, 0);
    } finally {
      await proxy.close();
      a.close();
    }
  });

  Deno.test(`relay (${udp}): garbage, short, non-v1 and short-header datagrams are dropped and counted`, async () => {
    const proxy = await startProxy({
      listen: { hostname: "127.0.0.1", port: 0 },
      resolver: mapResolver({}),
      udp,
      log: () => {},
    });
    try {
      const v2 = probe();
      v2[1] = 0x6b; // QUIC v2's version 0x6b3343cf
      const junk = [
        new Uint8Array([0xc0]),
        new Uint8Array(5).fill(0xff),
        new Uint8Array(1300).fill(0x41), // short header, no session
        v2,
        crypto.getRandomValues(new Uint8Array(1200)).map((x, i) => i === 0 ? x | 0x80 : x),
        probe().subarray(0, 1100), // truncated Initial
      ];
      const reply = await sendRaw(proxy, junk, probe());
      assert.ok(reply, "the probe after the junk is answered");
      const d = proxy.stats.drops;
      assert.equal(d.short, 3, JSON.stringify(d));
      assert.equal(d.short_header, 1, JSON.stringify(d));
      assert.ok((d.version ?? 0) >= 1, JSON.stringify(d));
      const total = Object.values(d).reduce((n, x) => n + x, 0);
      assert.equal(total, junk.length, JSON.stringify(d));
      assert.equal(proxy.stats.sessions, 0);
      assert.equal(proxy.stats.pending, 0);
    } finally {
      await proxy.close();
    }
  });
}

Deno.test("relay: Initials beyond the per-source rate are dropped and counted", async () => {
  // The proxy's clock is the test's: no refill happens until the test says so.
  let clock = 1_000_000;
  const proxy = await startProxy({
    listen: { hostname: "127.0.0.1", port: 0 },
    resolver: mapResolver({}),
    limits: { initialsPerSecond: 1, initialBurst: 5 },
    log: () => {},
    now: () => clock,
  });
  try {
    // Each Initial from its own port (one client each), all from the same IP.
    const socks = Array.from(
      { length: 31 },
      () => Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 }),
    );
    const to = { transport: "udp" as const, hostname: "127.0.0.1", port: proxy.port };
    try {
      for (const s of socks.slice(0, 30)) await s.send(probe(), to);
      for (const s of socks.slice(0, 5)) await s.receive();
      clock += 1_500; // one more token: the 31st is answered only after all 30 were read
      await socks[30].send(probe(), to);
      await socks[30].receive();
    } finally {
      for (const s of socks) s.close();
    }
    assert.equal(proxy.stats.refusals.unknown_machine, 6);
    assert.equal(proxy.stats.drops.rate, 25, JSON.stringify(proxy.stats.drops));
  } finally {
    await proxy.close();
  }
});

Deno.test("relay: idle sessions are closed; /healthz and /metrics report", async () => {
  const a = await startEchoServer("eeee0000000005");
  const sink = logSink();
  const proxy = await startProxy({
    listen: { hostname: "127.0.0.1", port: 0 },
    resolver: mapResolver({ eeee0000000005: a }),
    limits: { idleTimeoutMs: 300 },
    log: sink.log,
  });
  const admin = await startAdmin(proxy, { hostname: "127.0.0.1", port: 0 });
  try {
    const conn = await dial({
      hostname: "127.0.0.1",
      port: proxy.port,
      serverName: "eeee0000000005.vault.internal",
      caPem: a.identity.identityPem,
    });
    await echo(conn, new Uint8Array([1, 2, 3]));
    const health = await (await fetch(`http://127.0.0.1:${admin.port}/healthz`)).json();
    assert.equal(health.ok, true);
    assert.equal(health.sessions, 1);
    assert.equal(health.pending, 0);
    assert.ok(health.max_sessions > 0);
    conn.close();
    await sink.waitFor((e) => e.event === "session_close" && e.reason === "idle");
    assert.equal(proxy.stats.sessions, 0);
    const text = await (await fetch(`http://127.0.0.1:${admin.port}/metrics`)).text();
    assert.match(text, /vault_proxy_sessions_opened_total\{kind="session"\} 1/);
    assert.match(text, /vault_proxy_sessions_closed_total\{reason="idle"\} 1/);
    assert.match(text, /vault_proxy_packets_total\{direction="to_machine"\} \d+/);
    assert.match(text, /vault_proxy_routing_seconds_count 1/);
    assert.match(text, /vault_proxy_sessions 0/);
  } finally {
    await admin.close();
    await proxy.close();
    a.close();
  }
});

async function randomFlood(udp: UdpImpl) {
  const drops: string[] = [];
  let wake: (() => void) | undefined;
  const until = async (pred: () => boolean) => {
    while (!pred()) await new Promise<void>((r) => wake = r);
  };
  const proxy = await startProxy({
    listen: { hostname: "127.0.0.1", port: 0 },
    udp,
    resolver: mapResolver({}),
    limits: {
      maxPending: 50,
      maxPendingPerSource: 1000,
      maxPendingPerPrefix: 1000,
      pendingTimeoutMs: 200,
      initialsPerSecond: 1e6,
      initialBurst: 1e6,
    },
    log: () => {},
    onDrop(reason) {
      drops.push(reason);
      wake?.();
    },
  });
  const socks = Array.from(
    { length: 100 },
    () => Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 }),
  );
  try {
    const to = { transport: "udp" as const, hostname: "127.0.0.1", port: proxy.port };
    // 2000 random datagrams; a valid Initial after them is answered once all were read.
    const junk: Uint8Array[] = [];
    for (let i = 0; i < 2000; i++) {
      const d = crypto.getRandomValues(new Uint8Array(1 + ((i * 97) % 1400)));
      if (i % 2) d[0] |= 0xc0; // half look like long headers
      junk.push(d);
    }
    // In batches small enough for the socket's receive buffer (loopback drops on overflow).
    for (let i = 0; i < junk.length; i += 50) {
      assert.ok(await sendRaw(proxy, junk.slice(i, i + 50), probe()));
    }
    assert.equal(drops.length, 2000);
    // 100 clients each send the first of the three Initials their ClientHello needs.
    const big = clientHello({ sni: "half.vault.internal", pad: 2500 });
    // Paced so the proxy's receive buffer never overflows: a probe after each 25 pending, then
    // one at a time once full, each waiting for its own drop.
    for (let i = 0; i < 50; i++) {
      await socks[i].send(clientInitials(big)[0], to);
      if (i % 25 === 24 && i < 49) assert.ok(await sendRaw(proxy, [], probe()));
    }
    for (let i = 50; i < 100; i++) {
      const before = drops.length;
      await socks[i].send(clientInitials(big)[0], to);
      await until(() => drops.length > before);
    }
    // A full table makes room by evicting the oldest entry of the heaviest prefix (here the
    // only one): never more than 50 pending, and each newcomer still gets in.
    assert.equal(drops.filter((r) => r === "pending_evicted").length, 50);
    assert.equal(proxy.stats.pending, 50);
    assert.equal(proxy.stats.sessions, 0);
    // The 50 incomplete clients are forgotten after the pending timeout.
    await until(() => drops.filter((r) => r === "incomplete").length === 50);
    assert.equal(proxy.stats.pending, 0);
  } finally {
    for (const s of socks) s.close();
    await proxy.close();
  }
}

for (const udp of ["deno", "mmsg"] as UdpImpl[]) {
  Deno.test(
    `relay (${udp}): a flood of random datagrams and half ClientHellos stays within the bounds`,
    () => randomFlood(udp),
  );
}
