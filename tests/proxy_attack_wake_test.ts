/**
 * Attacks on the proxy's machine lookups and wakes (issue 11.5), by a stranger who only sends
 * Initials: none may hold the proxy's lookup slots for good, turn each Initial into a Machines
 * API request or a start, or lock other networks out of new routes.
 */
import assert from "node:assert/strict";
import {
  cachedResolver,
  machinesApiResolver,
  type Resolution,
  type Resolver,
  startProxy,
} from "../src/proxy/mod.ts";
import {
  askOnce,
  initialFor,
  receiveWithin,
  sendTo,
  startFakeApi,
  udpOn,
} from "./proxy_attack_helpers.ts";

const quiet = () => {};

Deno.test({
  name: "proxy attack: lookups that never settle free their slots at the deadline",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const machine = udpOn();
    const machinePort = (machine.addr as Deno.NetAddr).port;
    const asked: string[] = [];
    const resolver: Resolver = (id) => {
      asked.push(id);
      // A DNS or API server that accepts and never answers.
      if (id.startsWith("hang")) return new Promise<Resolution>(() => {});
      return Promise.resolve({ ok: true, backend: { hostname: "127.0.0.1", port: machinePort } });
    };
    const proxy = await startProxy({
      listen: { hostname: "127.0.0.1", port: 0 },
      resolver,
      limits: { maxResolving: 2, resolveTimeoutMs: 400 },
      log: quiet,
    });
    try {
      // Two hung lookups take both slots; their clients are refused at the deadline.
      const [a, b] = await Promise.all([
        askOnce(proxy.port, "hang0000000001", "127.0.0.1", 3_000),
        askOnce(proxy.port, "hang0000000002", "127.0.0.1", 3_000),
      ]);
      assert.ok(a && b, "a client whose lookup hangs is refused at the lookup deadline");
      assert.equal(proxy.stats.events.resolve_timeout, 2);
      // The slots are free again: a real machine's client is routed.
      const client = udpOn();
      try {
        await sendTo(client, initialFor("good0000000001"), proxy.port);
        const got = await receiveWithin(machine, 3_000);
        assert.ok(got, "the machine got its client's Initial: lookups are not stuck");
      } finally {
        client.close();
      }
    } finally {
      await proxy.close();
      machine.close();
    }
  },
});

Deno.test({
  name: "proxy attack: a machine that will not start is started once, not once per Initial",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const api = await startFakeApi("app1", {
      broken00000001: {
        id: "broken00000001",
        state: "stopped",
        private_ip: "127.0.0.1",
        events: [{ type: "start", status: "failed", timestamp: 1, request: { error: "no image" } }],
      },
    });
    const proxy = await startProxy({
      listen: { hostname: "127.0.0.1", port: 0 },
      resolver: cachedResolver(machinesApiResolver({ url: api.url, app: "app1", wake: true })),
      log: quiet,
    });
    try {
      for (let i = 0; i < 20; i++) {
        const close = await askOnce(proxy.port, "broken00000001");
        assert.ok(close, `client ${i} heard why`);
      }
      assert.equal(proxy.stats.refusals.wake_failed, 20);
      assert.equal(api.counts.get("POST /start"), 1, "one start for 20 clients within 5 s");
    } finally {
      await proxy.close();
      await api.close();
    }
  },
});

Deno.test({
  name:
    "proxy attack: random machine ids from one network cost a bounded number of API requests and lock no other network out",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const machine = udpOn();
    const machinePort = (machine.addr as Deno.NetAddr).port;
    const api = await startFakeApi("app1", {
      good0000000001: { id: "good0000000001", state: "started", private_ip: "127.0.0.1" },
    });
    const proxy = await startProxy({
      listen: { hostname: "127.0.0.1", port: 0 },
      resolver: cachedResolver(
        machinesApiResolver({ url: api.url, app: "app1", wake: true, port: machinePort }),
      ),
      log: quiet,
    });
    try {
      const ids = Array.from(
        { length: 40 },
        () => `${crypto.randomUUID().replaceAll("-", "").slice(0, 14)}`,
      );
      for (const id of ids) {
        assert.ok(await askOnce(proxy.port, id, "127.0.0.2"), `refused ${id}`);
      }
      const gets = api.counts.get("GET /") ?? 0;
      assert.ok(gets <= 12, `40 random ids from one /24 made ${gets} API requests`);
      assert.ok((proxy.stats.refusals.resolve_busy ?? 0) >= 28, JSON.stringify(proxy.stats));
      // Another network's client of a real machine is routed at once.
      const client = udpOn("127.0.1.9");
      try {
        await sendTo(client, initialFor("good0000000001"), proxy.port);
        assert.ok(await receiveWithin(machine, 3_000), "the other network's client was routed");
      } finally {
        client.close();
      }
    } finally {
      await proxy.close();
      await api.close();
      machine.close();
    }
  },
});

Deno.test({
  name: "proxy attack: a Machines API reply without end is refused at once, not read into memory",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const chunk = new TextEncoder().encode(`{"id":"x","pad":"${"a".repeat(60_000)}`);
    let sent = 0;
    const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, () =>
      new Response(
        new ReadableStream<Uint8Array>({
          pull(c) {
            sent += chunk.length;
            c.enqueue(chunk);
          },
        }),
      ));
    try {
      const resolve = machinesApiResolver({
        url: `http://127.0.0.1:${server.addr.port}`,
        app: "app1",
        timeoutMs: 10_000,
      });
      const t0 = performance.now();
      const r = await resolve("good0000000001");
      const ms = performance.now() - t0;
      assert.equal(r.ok, false);
      assert.ok(ms < 2_000, `answered after ${Math.round(ms)} ms`);
      assert.ok(sent < 8 * 1024 * 1024, `read ${sent} bytes of the reply`);
    } finally {
      await server.shutdown();
    }
  },
});

Deno.test({
  name: "proxy: a stopped machine started a moment later is routed at once (not a cached refusal)",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const machine = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.78", port: 8443 });
    const machines = {
      late0000000001: { id: "late0000000001", state: "stopped", private_ip: "127.0.0.78" },
    };
    const api = await startFakeApi("app1", machines);
    const proxy = await startProxy({
      listen: { hostname: "127.0.0.1", port: 0 },
      resolver: cachedResolver(machinesApiResolver({ url: api.url, app: "app1" })),
      log: quiet,
    });
    const client = udpOn();
    try {
      assert.ok(await askOnce(proxy.port, "late0000000001"), "refused while stopped");
      assert.equal(proxy.stats.refusals.stopped, 1);
      machines.late0000000001.state = "started"; // fly-vault wake
      await sendTo(client, initialFor("late0000000001"), proxy.port);
      assert.ok(await receiveWithin(machine, 3_000), "routed right after the start");
    } finally {
      client.close();
      await proxy.close();
      await api.close();
      machine.close();
    }
  },
});

Deno.test({
  name:
    "proxy: a failed wake tells the client why without the Machines API's address or app, and logs the cause in full",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const api = await startFakeApi("internal-app", {
      asleep00000001: { id: "asleep00000001", state: "suspended", private_ip: "127.0.0.1" },
    });
    // The start goes to a closed port: a real connection error, whose message names the URL.
    const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const closedPort = (closed.addr as Deno.NetAddr).port;
    closed.close();
    const resolve = machinesApiResolver({
      url: api.url,
      app: "internal-app",
      wake: true,
      fetch: (input, init) => {
        const url = String(input);
        return fetch(
          url.endsWith("/start") ? url.replace(api.url, `http://127.0.0.1:${closedPort}`) : url,
          init,
        );
      },
    });
    try {
      const r = await resolve("asleep00000001");
      assert.ok(!r.ok && r.reason === "wake_failed", JSON.stringify(r));
      assert.doesNotMatch(r.detail, /internal-app|127\.0\.0\.1|http/, r.detail);
      assert.match(r.cause ?? "", new RegExp(`127\\.0\\.0\\.1:${closedPort}`), "logged in full");
    } finally {
      await api.close();
    }
  },
});
