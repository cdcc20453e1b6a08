/**
 * Attack on the session table: a stranger opens a session, fakes the handshake's answer (a
 * Handshake packet's type bits are clear text) and keeps sending, so its session (one upstream
 * socket, a file descriptor) would live as long as it likes without the machine taking part.
 * A session whose machine says nothing for the idle time is closed whatever the client sends.
 */
import assert from "node:assert/strict";
import { concat, encodeVarint } from "../src/proxy/initial.ts";
import { startProxy } from "../src/proxy/mod.ts";
import { initialFor, receiveWithin, sendTo, udpOn } from "./proxy_attack_helpers.ts";

Deno.test({
  name: "proxy attack: a client alone cannot keep a session open once its machine is silent",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const machine = udpOn();
    const machinePort = (machine.addr as Deno.NetAddr).port;
    const closed: string[] = [];
    const { promise: gone, resolve: onGone } = Promise.withResolvers<void>();
    const proxy = await startProxy({
      listen: { hostname: "127.0.0.1", port: 0 },
      resolver: () =>
        Promise.resolve({ ok: true, backend: { hostname: "127.0.0.1", port: machinePort } }),
      limits: { idleTimeoutMs: 800, handshakeTimeoutMs: 60_000 },
      log: (e) => {
        if (e.event === "session_close") {
          closed.push(String(e.reason));
          onGone();
        }
      },
    });
    const client = udpOn();
    let sending = true;
    try {
      await sendTo(client, initialFor("mute0000000001"), proxy.port);
      assert.ok(await receiveWithin(machine, 3_000), "session open");
      // A faked answer to the machine's first flight, then a packet every 100 ms, for 3 s.
      const dcid = new Uint8Array(8).fill(1);
      const fakeHandshake = concat([
        new Uint8Array([0xe0, 0, 0, 0, 1, 8]),
        dcid,
        new Uint8Array([8]),
        dcid,
        encodeVarint(40),
        new Uint8Array(40),
      ]);
      const pump = (async () => {
        for (let i = 0; sending && i < 30; i++) {
          await sendTo(client, fakeHandshake, proxy.port);
          await new Promise((r) => setTimeout(r, 100));
        }
      })();
      const t0 = performance.now();
      const timer = new Promise<"open">((r) => setTimeout(() => r("open"), 3_000));
      const outcome = await Promise.race([gone.then(() => "closed" as const), timer]);
      sending = false;
      await pump;
      assert.equal(outcome, "closed", "the session outlived 3 s of machine silence");
      assert.deepEqual(closed, ["machine_silent"]);
      assert.ok(performance.now() - t0 < 2_000);
      assert.equal(proxy.stats.sessions, 0);
    } finally {
      sending = false;
      client.close();
      await proxy.close();
      machine.close();
    }
  },
});
