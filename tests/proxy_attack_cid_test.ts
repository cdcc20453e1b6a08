/**
 * Attacks on the proxy's learned connection IDs (issue 11.2) by a hostile machine (a tenant's
 * VM that answers its own clients with long headers of its choosing): it must not catch other
 * clients' packets with short CIDs, nor evict its session's real CIDs, nor turn each of its
 * replies into an announcement to every peer proxy.
 */
import assert from "node:assert/strict";
import { concat, encodeVarint } from "../src/proxy/initial.ts";
import { decodePeer } from "../src/proxy/peers.ts";
import { startProxy } from "../src/proxy/mod.ts";
import { initialFor, receiveWithin, sendTo, udpOn } from "./proxy_attack_helpers.ts";

/** A machine's Handshake packet with SCID `scid` (the proxy reads only its clear header). */
function handshakeFrom(scid: Uint8Array): Uint8Array {
  const dcid = new Uint8Array(8).fill(9);
  const body = new Uint8Array(40);
  return concat([
    new Uint8Array([0xe0, 0, 0, 0, 1, dcid.length]),
    dcid,
    new Uint8Array([scid.length]),
    scid,
    encodeVarint(body.length),
    body,
  ]);
}

/** A 1-RTT packet whose DCID starts with `dcid`. */
function shortPacket(dcid: Uint8Array): Uint8Array {
  const p = new Uint8Array(60).fill(0x33);
  p[0] = 0x40;
  p.set(dcid, 1);
  return p;
}

Deno.test({
  name:
    "proxy attack: a hostile machine's short or fresh CIDs neither catch other clients' packets nor flood the peers",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const machine = udpOn();
    const machinePort = (machine.addr as Deno.NetAddr).port;
    const peer = udpOn();
    const secret = new TextEncoder().encode("s".repeat(32));
    const opens: number[] = [];
    const proxy = await startProxy({
      listen: { hostname: "127.0.0.1", port: 0 },
      resolver: () =>
        Promise.resolve({ ok: true, backend: { hostname: "127.0.0.1", port: machinePort } }),
      peers: {
        listen: { hostname: "127.0.0.1", port: 0 },
        addresses: [{ hostname: "127.0.0.1", port: (peer.addr as Deno.NetAddr).port }],
        secret,
      },
      log: () => {},
    });
    const client = udpOn();
    const victim = udpOn("127.0.0.5");
    try {
      await sendTo(client, initialFor("evil0000000001"), proxy.port);
      const first = await receiveWithin(machine, 3_000);
      assert.ok(first, "the hostile machine's session is open");
      const upstream = first.addr;
      const reply = (d: Uint8Array) =>
        machine.send(d, { transport: "udp", hostname: "127.0.0.1", port: upstream.port });
      // Its real handshake CID, then a 1-byte one, then 100 fresh ones.
      const real = crypto.getRandomValues(new Uint8Array(8));
      await reply(handshakeFrom(real));
      assert.ok(await receiveWithin(client, 3_000), "the client got the machine's reply");
      await reply(handshakeFrom(new Uint8Array([0x41])));
      assert.ok(await receiveWithin(client, 3_000));
      for (let i = 0; i < 100; i++) {
        await reply(handshakeFrom(crypto.getRandomValues(new Uint8Array(8))));
      }
      // Each reply reaches the client; the last one tells us the proxy has handled them all.
      for (let i = 0; i < 100; i++) assert.ok(await receiveWithin(client, 3_000), `reply ${i}`);

      // Announcements the peer got: one per CID learned, at most 8 in all (was one per reply).
      for (;;) {
        const got = await receiveWithin(peer, 300);
        if (!got) break;
        const m = decodePeer(got.data, secret);
        if (m?.message.op === "open") opens.push(m.message.cids.length);
      }
      assert.ok(opens.length <= 9, `${opens.length} announcements for one session`);

      // Another client's packet from a new address whose DCID starts with the 1-byte CID.
      const before = proxy.stats.events.migrated ?? 0;
      await sendTo(victim, shortPacket(new Uint8Array([0x41, 1, 2, 3, 4, 5, 6, 7])), proxy.port);
      // The real CID (the first learned) still moves the session: it was not evicted.
      const moved = udpOn("127.0.0.6");
      try {
        await sendTo(moved, shortPacket(real), proxy.port);
        const relayed = await receiveWithin(machine, 3_000);
        assert.ok(relayed, "the packet with the real CID reached the machine");
        assert.equal(relayed.data[1], real[0], "and it is that packet, not the victim's");
      } finally {
        moved.close();
      }
      assert.equal(
        proxy.stats.events.migrated,
        before + 1,
        "only the real CID moved the session; a 1-byte CID caught nobody",
      );
    } finally {
      client.close();
      victim.close();
      await proxy.close();
      machine.close();
      peer.close();
    }
  },
});
