/**
 * Property fuzz of everything that reads untrusted bytes: no input makes the
 * parser throw, every failure carries a known reason, and what the assembler
 * keeps stays within its bound. 120,000 cases in all. Then the live relay on
 * each UDP data path (the JS one and the batched one): random datagrams from
 * several clients never make it fail, and what it relays arrives intact.
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
import { startProxy } from "./proxy.ts";
import { clientHello, clientInitials } from "./testutil.ts";
import type { UdpImpl } from "./udp.ts";

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

/** Resolves with `p`, or rejects after `ms`. */
function within<T>(ms: number, p: Promise<T>, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms);
  });
  return Promise.race([p, deadline]).finally(() => clearTimeout(timer));
}

const RELAY_MACHINE = "f0220000000001";
const RELAY_INITIAL = clientInitials(clientHello({ sni: `${RELAY_MACHINE}.vault.internal` }))[0];
const PROBE = clientInitials(clientHello({ sni: "nobody.vault.internal" }))[0];

/** What a fuzzing client sends: random bytes, a mutated Initial, or a short-header packet. */
const fuzzDatagram = fc.tuple(
  fc.nat(2),
  fc.oneof(
    fc.uint8Array({ maxLength: 1500 }),
    fc.uint8Array({ minLength: 1400, maxLength: 4096 }),
    mutated(RELAY_INITIAL),
    fc.uint8Array({ minLength: 20, maxLength: 1400 }).map((d) => (d[0] = 0x40 | (d[0] & 0x3f), d)),
  ),
);

for (const udp of ["deno", "mmsg"] as UdpImpl[]) {
  Deno.test(`fuzz (${udp}): a live relay fed random datagrams from 3 clients (25 runs)`, async () => {
    // The machine: records what it is sent, answers nothing.
    const machine = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
    const atMachine: Uint8Array[] = [];
    let wake: (() => void) | undefined;
    const recording = (async () => {
      try {
        for (;;) {
          const [d] = await machine.receive(new Uint8Array(8192));
          atMachine.push(d);
          wake?.();
        }
      } catch {
        // closed
      }
    })();
    const until = async (pred: () => boolean, what: string) => {
      while (!pred()) await within(5000, new Promise<void>((r) => wake = r), what);
    };
    const port = (machine.addr as Deno.NetAddr).port;
    const proxy = await startProxy({
      listen: { hostname: "127.0.0.1", port: 0 },
      udp,
      resolver: (id) =>
        Promise.resolve(
          id === RELAY_MACHINE
            ? { ok: true, backend: { hostname: "127.0.0.1", port } }
            : { ok: false, reason: "unknown", detail: `no machine ${id}` },
        ),
      limits: { initialsPerSecond: 1e6, initialBurst: 1e6 },
      log: () => {},
    });
    const to = { transport: "udp" as const, hostname: "127.0.0.1", port: proxy.port };
    try {
      await fc.assert(
        fc.asyncProperty(fc.array(fuzzDatagram, { maxLength: 30 }), async (plan) => {
          const clients = [0, 1, 2].map(() =>
            Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 })
          );
          try {
            // Client 0 has a session before the fuzz: its Initial reached the machine.
            const base = atMachine.length;
            await clients[0].send(RELAY_INITIAL, to);
            await until(() => atMachine.length > base, "client 0's Initial");
            const from0: Uint8Array[] = [];
            const sent = new Set<string>([RELAY_INITIAL.toString()]);
            const start = atMachine.length;
            for (const [c, d] of plan) {
              await clients[c].send(d, to);
              sent.add(d.slice(0, 4096).toString());
              if (c === 0) from0.push(d.slice(0, 4096));
            }
            // The proxy read everything before this (one socket, in order) and is still serving.
            const probe = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
            try {
              await probe.send(PROBE, to);
              await within(5000, probe.receive(), "probe answer");
            } finally {
              probe.close();
            }
            assert.deepEqual(proxy.stats.errors, {});
            // Client 0's datagrams, in order and intact (cut to 4 KiB as the relay reads them);
            // the others' may open sessions of their own (a mutated Initial can stay valid), but
            // nothing reaches the machine that no client sent.
            await until(() => atMachine.length - start >= from0.length, "client 0's datagrams");
            const relayed = atMachine.slice(start);
            for (const d of relayed) assert.ok(sent.has(d.toString()), "a datagram nobody sent");
            let k = 0;
            for (const d of relayed) {
              if (k < from0.length && d.toString() === from0[k].toString()) k++;
            }
            assert.equal(k, from0.length, "client 0's datagrams out of order or lost");
          } finally {
            for (const c of clients) c.close();
          }
        }),
        { numRuns: 25 },
      );
    } finally {
      await proxy.close();
      machine.close();
      await recording;
    }
  });
}
