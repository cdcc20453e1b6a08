/**
 * Real client Initials: Deno's own QUIC client (quinn + rustls) dialling a
 * raw UDP socket, read by the proxy's parser; and the proxy's Initial
 * CONNECTION_CLOSE as that client sees it.
 */
import assert from "node:assert/strict";
import {
  buildInitialClose,
  CryptoAssembler,
  readClientInitials,
  TransportError,
} from "../src/proxy/mod.ts";
import { captureClient } from "./proxy_fixture.ts";

/** Feeds datagrams to an assembler until the SNI is read; returns it and how many packets it took. */
function sniOf(datagrams: Uint8Array[]) {
  const first = readClientInitials(datagrams[0]);
  assert.ok(first.ok, first.ok ? "" : first.reason);
  const asm = new CryptoAssembler();
  let packets = 0;
  for (const d of datagrams) {
    const r = readClientInitials(d, first.value.dcid);
    if (!r.ok) continue;
    for (const f of r.value.frames) {
      packets++;
      assert.ok(asm.add(f.crypto).ok);
    }
    const s = asm.sni();
    if (s.ok) return { ...s.value, packets, dcid: first.value.dcid, scid: first.value.scid };
  }
  return undefined;
}

Deno.test("Deno's QUIC client: its Initial is parsed and the SNI read", async () => {
  let hello: ReturnType<typeof sniOf>;
  const { error, ms } = await captureClient({
    serverName: "d8e7f6a5b4c3e2.vault.internal",
    async onDatagram(_d, all, reply) {
      hello = sniOf(all);
      if (!hello) return false;
      await reply(buildInitialClose({
        originalDcid: hello.dcid,
        clientScid: hello.scid,
        serverCid: crypto.getRandomValues(new Uint8Array(8)),
        code: TransportError.CONNECTION_REFUSED,
        reason: "unknown machine d8e7f6a5b4c3e2",
      }));
      return true;
    },
  });
  assert.equal(hello!.sni, "d8e7f6a5b4c3e2.vault.internal");
  assert.deepEqual(hello!.alpn, ["fly-vault/1"]);
  assert.ok(error, "the connect must fail");
  console.log(`client saw: ${error} after ${ms.toFixed(0)} ms`);
  assert.match(String(error), /unknown machine d8e7f6a5b4c3e2/);
  assert.ok(ms < 1000, `client failed after ${ms} ms`);
});

Deno.test("Deno's QUIC client: a ClientHello split over two Initial packets is reassembled", async () => {
  // A long ALPN list makes the ClientHello bigger than one 1200-byte datagram.
  const alpn = Array.from({ length: 12 }, (_, i) => `proto-${i}-${"x".repeat(90)}`);
  let hello: ReturnType<typeof sniOf>;
  const { datagrams } = await captureClient({
    serverName: "0123456789abcd.vault.internal",
    alpn,
    async onDatagram(_d, all, reply) {
      hello = sniOf(all);
      if (!hello) return false;
      await reply(buildInitialClose({
        originalDcid: hello.dcid,
        clientScid: hello.scid,
        serverCid: crypto.getRandomValues(new Uint8Array(8)),
        code: TransportError.CONNECTION_REFUSED,
        reason: "test done",
      }));
      return true;
    },
  });
  assert.equal(hello!.sni, "0123456789abcd.vault.internal");
  assert.equal(hello!.alpn.length, 12);
  assert.ok(hello!.packets >= 2, `ClientHello took ${hello!.packets} packets`);
  assert.ok(datagrams.length >= 1);
});
