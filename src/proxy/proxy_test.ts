/**
 * The flood bounds' small parts: the prefix a source is counted under, the session budget
 * under an open-file limit, and how a session's client is recognised as a real peer.
 */
import assert from "node:assert/strict";
import { concat, encodeVarint, initialKeys, protectInitial } from "./initial.ts";
import { answersHandshake, openFileLimit, sessionBudget, sourcePrefix } from "./proxy.ts";
import { clientHello, clientInitials } from "./testutil.ts";

Deno.test("source prefix: /24 for IPv4 and v4-mapped, /56 for IPv6 however written", () => {
  assert.equal(sourcePrefix("203.0.113.77"), "203.0.113.0/24");
  assert.equal(sourcePrefix("::ffff:203.0.113.5"), "203.0.113.0/24");
  assert.equal(sourcePrefix("2001:db8:aa:bbcc::1"), "2001:db8:aa:bb00::/56");
  assert.equal(
    sourcePrefix("2001:0db8:00aa:bbff:1:2:3:4"),
    sourcePrefix("2001:db8:aa:bb01::9"),
  );
  assert.notEqual(sourcePrefix("2001:db8:aa:bb00::1"), sourcePrefix("2001:db8:aa:cc00::1"));
  assert.equal(sourcePrefix("::1"), "0:0:0:0::/56");
});

Deno.test("session budget: one socket a session, a reserve for the rest of the process", () => {
  assert.equal(sessionBudget(256), 160);
  assert.equal(sessionBudget(1024), 896);
  assert.equal(sessionBudget(65536), 57344);
  assert.equal(sessionBudget(100), 50);
  assert.equal(sessionBudget(0), 0);
  const limit = openFileLimit();
  assert.ok(limit === undefined || limit > 0);
});

Deno.test("a client that answers the handshake: Handshake or 1-RTT packets, not Initials", () => {
  const [initial] = clientInitials(clientHello({ sni: "abc.vault.internal" }));
  assert.equal(answersHandshake(initial), false);
  // A short-header (1-RTT) datagram.
  const oneRtt = new Uint8Array(40).fill(7);
  oneRtt[0] = 0x41;
  assert.equal(answersHandshake(oneRtt), true);
  // An Initial ACK coalesced with a Handshake packet, as a client answers a server's first flight.
  const dcid = crypto.getRandomValues(new Uint8Array(8));
  const scid = crypto.getRandomValues(new Uint8Array(8));
  const ack = protectInitial({
    keys: initialKeys(dcid, "client"),
    dcid,
    scid,
    packetNumber: 1,
    payload: concat([new Uint8Array([0x02, 0, 0, 0, 0]), new Uint8Array(60)]),
  });
  const hsBody = new Uint8Array(40);
  const handshake = concat([
    new Uint8Array([0xe0, 0, 0, 0, 1, dcid.length]),
    dcid,
    new Uint8Array([scid.length]),
    scid,
    encodeVarint(hsBody.length),
    hsBody,
  ]);
  assert.equal(answersHandshake(concat([ack, handshake])), true);
  assert.equal(answersHandshake(concat([ack, new Uint8Array(1200)])), false, "zero padding");
});
