import assert from "node:assert/strict";
import {
  buildInitialClose,
  CryptoAssembler,
  decryptInitial,
  fromHex,
  initialKeys,
  initialSecret,
  parseClientHello,
  parseInitialFrames,
  parseLongHeader,
  readClientInitials,
  TransportError,
} from "./initial.ts";
import { RFC9001_A2_CLIENT_INITIAL } from "./rfc9001_vectors.ts";
import { clientHello, clientInitials } from "./testutil.ts";

const toHex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
const DCID = fromHex("8394c8f03e515708");

Deno.test("RFC 9001 A.1: initial secrets and keys from the DCID", () => {
  assert.equal(
    toHex(initialSecret(DCID, "client")),
    "c00cf151ca5be075ed0ebfb5c80323c42d6b7db67881289af4008f1f6c357aea",
  );
  const c = initialKeys(DCID, "client");
  assert.equal(toHex(c.key), "1f369613dd76d5467730efcbe3b1a22d");
  assert.equal(toHex(c.iv), "fa044b2f42a3fd3b46fb255c");
  assert.equal(toHex(c.hp), "9f50449e04a0e810283a1e9933adedd2");
  const s = initialKeys(DCID, "server");
  assert.equal(toHex(s.key), "cf3a5331653c364c88f0f379b6067e37");
  assert.equal(toHex(s.iv), "0ac1493ca1905853b0bba03e");
  assert.equal(toHex(s.hp), "c206b8d9b9f0f37644430b490eeaa314");
});

Deno.test("RFC 9001 A.2: the client Initial decrypts to a ClientHello for example.com", () => {
  const pkt = fromHex(RFC9001_A2_CLIENT_INITIAL);
  const copy = pkt.slice();
  const h = parseLongHeader(pkt);
  assert.ok(h.ok);
  assert.equal(h.value.type, 0);
  assert.equal(toHex(h.value.dcid), "8394c8f03e515708");
  assert.equal(h.value.end, 1200);
  const d = decryptInitial(pkt, h.value, initialKeys(DCID, "client"));
  assert.ok(d.ok, d.ok ? "" : d.reason);
  assert.equal(d.value.packetNumber, 2);
  assert.equal(d.value.payload.length, 1162);
  assert.deepEqual(pkt, copy, "the datagram is relayed as is, so it must not be modified");
  const f = parseInitialFrames(d.value.payload);
  assert.ok(f.ok);
  assert.equal(f.value.crypto.length, 1);
  assert.equal(f.value.crypto[0].data.length, 241);
  const ch = parseClientHello(f.value.crypto[0].data);
  assert.ok(ch.ok);
  assert.equal(ch.value.sni, "example.com");
  assert.deepEqual(ch.value.alpn, ["alpn"]);
  const all = readClientInitials(pkt);
  assert.ok(all.ok);
  assert.equal(all.value.frames.length, 1);
});

Deno.test("RFC 9001 A.2: a flipped bit anywhere in the protected part fails as decrypt", () => {
  const pkt = fromHex(RFC9001_A2_CLIENT_INITIAL);
  for (const at of [18, 19, 30, 600, 1199]) {
    const bad = pkt.slice();
    bad[at] ^= 0x01;
    const r = readClientInitials(bad);
    assert.ok(!r.ok);
    assert.equal(r.reason, "decrypt", `byte ${at}`);
  }
});

Deno.test("assembler: a ClientHello split in two CRYPTO chunks, in either order", () => {
  const pkt = fromHex(RFC9001_A2_CLIENT_INITIAL);
  const h = parseLongHeader(pkt);
  assert.ok(h.ok);
  const d = decryptInitial(pkt, h.value, initialKeys(DCID, "client"));
  assert.ok(d.ok);
  const f = parseInitialFrames(d.value.payload);
  assert.ok(f.ok);
  const hello = f.value.crypto[0].data;
  const asm = new CryptoAssembler();
  // Second half first: order must not matter.
  assert.ok(asm.add([{ offset: 100, data: hello.subarray(100) }]).ok);
  const mid = asm.sni();
  assert.ok(!mid.ok && mid.reason === "incomplete");
  assert.ok(asm.add([{ offset: 0, data: hello.subarray(0, 100) }]).ok);
  const done = asm.sni();
  assert.ok(done.ok);
  assert.equal(done.value.sni, "example.com");
});

Deno.test("assembler refuses data past its byte bound and packets past its count", () => {
  const asm = new CryptoAssembler({ maxBytes: 1000, maxPackets: 2 });
  assert.equal(asm.add([{ offset: 990, data: new Uint8Array(20) }]).ok, false);
  const a2 = new CryptoAssembler({ maxBytes: 1000, maxPackets: 2 });
  assert.ok(a2.add([]).ok);
  assert.ok(a2.add([]).ok);
  const r = a2.add([]);
  assert.ok(!r.ok && r.reason === "too_big");
});

Deno.test("server Initial CONNECTION_CLOSE decrypts with the server keys and names the machine", () => {
  const scid = fromHex("0102030405060708");
  const pkt = buildInitialClose({
    originalDcid: DCID,
    clientScid: scid,
    serverCid: fromHex("a1a2a3a4a5a6a7a8"),
    code: TransportError.CONNECTION_REFUSED,
    reason: "unknown machine 1234",
  });
  const h = parseLongHeader(pkt);
  assert.ok(h.ok);
  assert.deepEqual(h.value.dcid, scid);
  const d = decryptInitial(pkt, h.value, initialKeys(DCID, "server"));
  assert.ok(d.ok);
  const f = parseInitialFrames(d.value.payload);
  assert.ok(f.ok);
  assert.deepEqual(f.value.close, { code: 2, reason: "unknown machine 1234" });
  // The client keys must not open it.
  assert.equal(decryptInitial(pkt, h.value, initialKeys(DCID, "client")).ok, false);
});

Deno.test("typed reasons: short, short header, version, not initial", () => {
  const cases: [Uint8Array, string][] = [
    [new Uint8Array(0), "short"],
    [new Uint8Array([0xc0, 0, 0]), "short"],
    [new Uint8Array(1300).fill(0x40), "short_header"],
    [new Uint8Array([0xc0, 0xff, 0, 0, 0x1d, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0]), "version"],
    [new Uint8Array([0xc0, 0, 0, 0, 0, 0, 0]), "version"],
  ];
  for (const [buf, reason] of cases) {
    const r = readClientInitials(buf);
    assert.ok(!r.ok);
    assert.equal(r.reason, reason, toHex(buf.subarray(0, 8)));
  }
  const pkt = fromHex(RFC9001_A2_CLIENT_INITIAL);
  const hs = pkt.slice();
  hs[0] = (hs[0] & 0xcf) | 0x20; // type Handshake
  const r = readClientInitials(hs);
  assert.ok(!r.ok && r.reason === "not_initial");
  const small = readClientInitials(pkt.subarray(0, 1100));
  assert.ok(!small.ok && small.reason === "short");
});

Deno.test("coalesced: a ClientHello split over two Initials in one datagram", () => {
  const hello = clientHello({ sni: "abc123.vault.internal" });
  const [dgram] = clientInitials(hello, { chunk: Math.ceil(hello.length / 2), coalesce: true });
  assert.ok(dgram.length >= 1200);
  const r = readClientInitials(dgram);
  assert.ok(r.ok, r.ok ? "" : r.reason);
  assert.equal(r.value.frames.length, 2);
  const asm = new CryptoAssembler();
  for (const f of r.value.frames) assert.ok(asm.add(f.crypto).ok);
  const sni = asm.sni();
  assert.ok(sni.ok);
  assert.equal(sni.value.sni, "abc123.vault.internal");
});

Deno.test("a big ClientHello over three datagrams; no SNI is its own reason", () => {
  const hello = clientHello({ sni: "m1.vault.internal", pad: 2500 });
  const dgrams = clientInitials(hello);
  assert.equal(dgrams.length, 3);
  const asm = new CryptoAssembler();
  for (const [i, d] of dgrams.entries()) {
    const r = readClientInitials(d);
    assert.ok(r.ok);
    for (const f of r.value.frames) assert.ok(asm.add(f.crypto).ok);
    const s = asm.sni();
    if (i < 2) assert.ok(!s.ok && s.reason === "incomplete");
    else assert.ok(s.ok && s.value.sni === "m1.vault.internal");
  }
  const none = parseClientHello(clientHello({}));
  assert.ok(!none.ok && none.reason === "no_sni");
});
