/**
 * Attack on the peer wire (issue 11.4) by someone who recorded signed peer messages on the
 * private network: replayed within the freshness window, an old "close" must not make a proxy
 * forget a client its peer holds now (its packets would be lost until the next announcement).
 */
import assert from "node:assert/strict";
import { decodePeer, encodePeer } from "../src/proxy/peers.ts";
import { startProxy } from "../src/proxy/mod.ts";
import { receiveWithin, sendTo, udpOn } from "./proxy_attack_helpers.ts";

Deno.test({
  name: "proxy attack: a recorded peer 'close' replayed behind a newer 'open' is ignored",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const secret = new TextEncoder().encode("p".repeat(32));
    const peer = udpOn();
    const drops: string[] = [];
    let dropped: (() => void) | undefined;
    const proxy = await startProxy({
      listen: { hostname: "127.0.0.1", port: 0 },
      resolver: () => Promise.resolve({ ok: false, reason: "unknown", detail: "none" }),
      peers: {
        listen: { hostname: "127.0.0.1", port: 0 },
        addresses: [{ hostname: "127.0.0.1", port: (peer.addr as Deno.NetAddr).port }],
        secret,
      },
      onDrop: (r) => {
        drops.push(r);
        dropped?.();
      },
      log: () => {},
    });
    const client = udpOn("127.0.0.9");
    try {
      const host = "127.0.0.9";
      const port = (client.addr as Deno.NetAddr).port;
      const sender = crypto.getRandomValues(new Uint8Array(8));
      const now = Date.now();
      // Recorded earlier: the peer closed an older session of this client address...
      const recordedClose = encodePeer({ op: "close", host, port }, sender, secret, now - 500);
      // ...and holds the client now.
      const open = encodePeer({ op: "open", host, port, cids: [] }, sender, secret, now);
      const toProxy = (b: Uint8Array) => sendTo(peer, b, proxy.peerPort!);
      await toProxy(open);
      await toProxy(recordedClose);
      // A packet for a client nobody holds: its drop says the messages before it were handled.
      const handled = new Promise<void>((r) => dropped = r);
      await toProxy(
        encodePeer(
          { op: "packet", host: "127.0.0.10", port: 1, data: new Uint8Array(40) },
          sender,
          secret,
        ),
      );
      await handled;
      assert.ok(drops.includes("peer_unknown"), drops.join());
      // Drain the "close" the proxy sent back for that unknown packet.
      await receiveWithin(peer, 1_000);

      // The client's next packet is forwarded to the peer that holds it.
      const datagram = new Uint8Array(60).fill(0x44);
      datagram[0] = 0x40;
      await sendTo(client, datagram, proxy.port);
      const got = await receiveWithin(peer, 3_000);
      assert.ok(got, "the client's packet was forwarded to its holder");
      const m = decodePeer(got.data, secret);
      assert.equal(m?.message.op, "packet");
      assert.equal(m?.message.host, host);
    } finally {
      client.close();
      await proxy.close();
      peer.close();
    }
  },
});
