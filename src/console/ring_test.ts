import assert from "node:assert/strict";
import { ReplayRing } from "./sessions.ts";

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

Deno.test("replay ring: keeps the last N bytes, addressed by absolute offset", () => {
  const ring = new ReplayRing(16);
  ring.push(enc("hello\n"));
  ring.push(enc("world\n"));
  assert.deepEqual([ring.start, ring.end], [0, 12]);
  assert.equal(dec(ring.since(0).bytes), "hello\nworld\n");
  assert.deepEqual(ring.since(6), { from: 6, bytes: enc("world\n") });
  assert.equal(ring.since(12).bytes.length, 0);
  ring.push(enc("again and more\n")); // 27 bytes written, 16 kept
  assert.deepEqual([ring.start, ring.end], [11, 27]);
  // A client behind the ring gets what is left, starting after a newline.
  const behind = ring.since(3);
  assert.equal(dec(behind.bytes), "again and more\n");
  assert.equal(behind.from, 12);
  // A client ahead (a stale offset from another incarnation) gets nothing and the true end.
  assert.equal(ring.since(99).from, 27);
});

Deno.test("replay ring: one chunk larger than the ring keeps its tail", () => {
  const ring = new ReplayRing(4);
  ring.push(enc("abcdefgh"));
  assert.deepEqual([ring.start, ring.end], [4, 8]);
  assert.equal(dec(ring.since(0).bytes), "efgh");
});
