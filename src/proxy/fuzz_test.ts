/**
 * Property fuzz of everything that reads untrusted bytes: no input makes the
 * parser throw, every failure carries a known reason, and what the assembler
 * keeps stays within its bound. 120,000 cases in all.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  CryptoAssembler,
  encodeVarint,
  initialKeys,
  parseClientHello,
  parseInitialFrames,
  protectInitial,
  readClientInitials,
} from "./initial.ts";
import { clientHello, clientInitials } from "./testutil.ts";

const REASONS = new Set([
  "short",
  "short_header",
  "version",
  "not_initial",
  "header",
  "decrypt",
  "frame",
  "tls",
  "no_sni",
  "incomplete",
  "too_big",
]);

function check(r: { ok: boolean; reason?: string }) {
  if (!r.ok) assert.ok(REASONS.has(r.reason!), `unknown reason ${r.reason}`);
}

const HELLO = clientHello({ sni: "abcdef0123456.vault.internal", pad: 200 });
const [INITIAL] = clientInitials(HELLO);

/** Byte arrays that are a valid message with a few bytes overwritten, truncated or extended. */
function mutated(base: Uint8Array) {
  return fc.record({
    edits: fc.array(fc.tuple(fc.nat(base.length - 1), fc.integer({ min: 0, max: 255 })), {
      maxLength: 6,
    }),
    cut: fc.option(fc.nat(base.length), { nil: undefined }),
    tail: fc.uint8Array({ maxLength: 40 }),
  }).map(({ edits, cut, tail }) => {
    const b = base.slice(0, cut ?? base.length);
    for (const [i, v] of edits) if (i < b.length) b[i] = v;
    const out = new Uint8Array(b.length + tail.length);
    out.set(b);
    out.set(tail, b.length);
    return out;
  });
}

Deno.test("fuzz: datagrams, random and mutated Initials (40k)", () => {
  fc.assert(
    fc.property(fc.oneof(fc.uint8Array({ maxLength: 1500 }), mutated(INITIAL)), (d) => {
      check(readClientInitials(d));
    }),
    { numRuns: 40_000 },
  );
});

Deno.test("fuzz: frames inside a validly protected Initial (20k)", () => {
  const dcid = new Uint8Array(8).fill(7);
  const keys = initialKeys(dcid, "client");
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 1, maxLength: 1300 }), (frames) => {
      const pkt = protectInitial({
        keys,
        dcid,
        scid: new Uint8Array(0),
        packetNumber: 0,
        payload: frames,
      });
      const padded = new Uint8Array(Math.max(1200, pkt.length));
      padded.set(pkt);
      const r = readClientInitials(padded);
      check(r);
      // The datagram decrypts, so anything wrong is in the frames (or past them: padding bytes).
      if (!r.ok) assert.ok(["frame", "short"].includes(r.reason), r.reason);
    }),
    { numRuns: 20_000 },
  );
});

Deno.test("fuzz: frame parser and ClientHello parser on mutated and random bytes (40k)", () => {
  const crypto = new Uint8Array([
    0x06,
    ...encodeVarint(0),
    ...encodeVarint(HELLO.length),
    ...HELLO,
  ]);
  fc.assert(
    fc.property(fc.oneof(mutated(crypto), fc.uint8Array({ maxLength: 600 })), (b) => {
      check(parseInitialFrames(b));
    }),
    { numRuns: 20_000 },
  );
  fc.assert(
    fc.property(fc.oneof(mutated(HELLO), fc.uint8Array({ maxLength: 600 })), (b) => {
      const r = parseClientHello(b);
      check(r);
      if (r.ok) assert.ok(typeof r.value.sni === "string" && r.value.sni.length <= 0xffff);
    }),
    { numRuns: 20_000 },
  );
});

Deno.test("fuzz: the assembler never holds more than its bound (20k)", () => {
  const limits = { maxBytes: 4096, maxPackets: 8 };
  fc.assert(
    fc.property(
      fc.array(
        fc.array(
          fc.record({
            offset: fc.oneof(fc.nat(5000), fc.constant(2 ** 40)),
            data: fc.uint8Array({ maxLength: 1500 }),
          }),
          { maxLength: 4 },
        ),
        { maxLength: 12 },
      ),
      (packets) => {
        const asm = new CryptoAssembler(limits);
        for (const chunks of packets) {
          const r = asm.add(chunks);
          check(r);
          if (!r.ok) break;
        }
        assert.ok(asm.contiguous().length <= limits.maxBytes);
        check(asm.sni());
      },
    ),
    { numRuns: 20_000 },
  );
});
