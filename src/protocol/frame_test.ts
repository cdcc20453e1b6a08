import assert from "node:assert/strict";
import { z } from "zod";
import { encodeData, encodeMessage, FrameReader, MAX_FRAME, ProtocolError } from "./mod.ts";
import { ExecRequest, isStreamTag, SessionInput } from "./mod.ts";

function streamOf(...chunks: Uint8Array[]): ReadableStream<Uint8Array> {
  return new ReadableStream({
    start(c) {
      for (const chunk of chunks) c.enqueue(chunk);
      c.close();
    },
  });
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) (out.set(p, off), off += p.length);
  return out;
}

async function rejectsWith(p: Promise<unknown>, code: string) {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof ProtocolError, `expected ProtocolError, got ${err}`);
    assert.equal(err.code, code);
    return true;
  });
}

Deno.test("frames round-trip, split at every byte boundary", async () => {
  const bytes = concat(
    encodeMessage({ type: "eof" }),
    encodeData(2, new TextEncoder().encode("hello")),
    encodeData(3, new Uint8Array(0)),
  );
  for (let cut = 0; cut <= bytes.length; cut++) {
    const r = new FrameReader(streamOf(bytes.subarray(0, cut), bytes.subarray(cut)));
    assert.deepEqual(await r.message(SessionInput), { type: "eof" });
    const data = await r.next();
    assert.ok(data?.kind === "data" && data.channel === 2);
    assert.equal(new TextDecoder().decode(data.bytes), "hello");
    const empty = await r.next();
    assert.ok(empty?.kind === "data" && empty.channel === 3 && empty.bytes.length === 0);
    assert.equal(await r.next(), null);
  }
});

Deno.test("truncated header and truncated payload are protocol errors", async () => {
  const frame = encodeMessage({ type: "eof" });
  await rejectsWith(new FrameReader(streamOf(frame.subarray(0, 3))).next(), "protocol.truncated");
  await rejectsWith(new FrameReader(streamOf(frame.subarray(0, 7))).next(), "protocol.truncated");
});

Deno.test("an oversize length is refused before any allocation", async () => {
  const head = new Uint8Array([0xff, 0xff, 0xff, 0xff, 0]);
  await rejectsWith(new FrameReader(streamOf(head)).next(), "protocol.frame_size");
  const justOver = new Uint8Array(5);
  new DataView(justOver.buffer).setUint32(0, MAX_FRAME + 2);
  await rejectsWith(new FrameReader(streamOf(justOver)).next(), "protocol.frame_size");
  const zero = new Uint8Array(5);
  await rejectsWith(new FrameReader(streamOf(zero)).next(), "protocol.frame_size");
});

Deno.test("invalid JSON, unknown kinds and unknown message types are refused", async () => {
  const bad = new TextEncoder().encode("{nope");
  const frame = concat(new Uint8Array([0, 0, 0, bad.length + 1, 0]), bad);
  await rejectsWith(new FrameReader(streamOf(frame)).next(), "protocol.bad_json");
  const kind9 = new Uint8Array([0, 0, 0, 1, 9]);
  await rejectsWith(new FrameReader(streamOf(kind9)).next(), "protocol.frame_kind");
  const unknownType = encodeMessage({ type: "launch_missiles" });
  await rejectsWith(
    new FrameReader(streamOf(unknownType)).message(SessionInput),
    "protocol.bad_message",
  );
  const extraField = encodeMessage({ type: "eof", extra: 1 });
  await rejectsWith(
    new FrameReader(streamOf(extraField)).message(SessionInput),
    "protocol.bad_message",
  );
});

Deno.test("end of stream where a message is required is an error, not a hang", async () => {
  await rejectsWith(new FrameReader(streamOf()).message(z.any(), "hello"), "protocol.eof");
});

Deno.test("raw() hands back read-ahead bytes then the rest of the stream", async () => {
  const head = encodeMessage({ type: "forward", host: "localhost", port: 80 });
  const r = new FrameReader(streamOf(concat(head, new Uint8Array([1, 2])), new Uint8Array([3])));
  await r.next();
  const rest: number[] = [];
  for await (const chunk of r.raw()) rest.push(...chunk);
  assert.deepEqual(rest, [1, 2, 3]);
});

Deno.test("detach() hands back read-ahead bytes and the source stream itself, unlocked", async () => {
  const head = encodeMessage({ type: "forward", host: "localhost", port: 80 });
  const source = streamOf(concat(head, new Uint8Array([1, 2])), new Uint8Array([3]));
  const r = new FrameReader(source);
  await r.next();
  const detached = r.detach();
  assert.equal(detached.readable, source);
  assert.equal(source.locked, false);
  const rest: number[] = detached.head.flatMap((c) => [...c]);
  for await (const chunk of detached.readable) rest.push(...chunk);
  assert.deepEqual(rest, [1, 2, 3]);
});

Deno.test("exec schema fills defaults and bounds argv", () => {
  const parsed = ExecRequest.parse({ type: "exec", argv: ["true"] });
  assert.deepEqual(parsed.env, {});
  assert.equal(parsed.tty, false);
  assert.throws(() => ExecRequest.parse({ type: "exec", argv: [] }));
  assert.equal(isStreamTag(4), true);
  assert.equal(isStreamTag(200), false);
});
