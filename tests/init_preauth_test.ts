/**
 * What an unauthenticated peer can do to init: frames on attest/control are
 * capped small, a second control stream is refused, and other streams
 * answer "authenticate first" — checked against a real init process.
 */
import assert from "node:assert/strict";
import { BOOTSTRAP_CA_CERT_PEM, serverNameFor } from "../src/pki/mod.ts";
import { dialQuic } from "../src/transport/mod.ts";
import { encodeMessage, ErrorMessage, FrameReader, StreamTag } from "../src/protocol/mod.ts";
import { startSim } from "./harness.ts";

Deno.test("before auth: small frames only, one control stream, nothing else served", async () => {
  const sim = await startSim();
  try {
    const m = await sim.startMachine("pre0001");
    // Anyone can reach the server through the public bootstrap CA; that is the point of the test.
    const conn = await dialQuic({
      address: m.address,
      serverName: serverNameFor("pre0001"),
      caPem: BOOTSTRAP_CA_CERT_PEM,
      timeoutMs: 5000,
    });

    // A 100 KiB "hello" is refused by its length, before it is read, and the stream ends.
    const control = await conn.openStream(StreamTag.control);
    const w = control.writable.getWriter();
    const header = new Uint8Array(5);
    new DataView(header.buffer).setUint32(0, 100 * 1024 + 1);
    await w.write(header);
    const reply = new FrameReader(control.readable);
    const tooBig = await reply.message(ErrorMessage);
    assert.equal(tooBig.code, "protocol.frame_size");
    assert.match(tooBig.message, /frame of 102401 bytes/);
    assert.equal(await reply.next(), null, "then the stream ends");

    // A second control stream on the same connection is refused.
    const second = await conn.openStream(StreamTag.control);
    const sw = second.writable.getWriter();
    await sw.write(encodeMessage({ type: "hello", protocol: 1, client: "x" }));
    const refusal = await new FrameReader(second.readable).message(ErrorMessage);
    assert.equal(refusal.code, "protocol.second_control");

    // exec before auth: told to authenticate first.
    const exec = await conn.openStream(StreamTag.exec);
    const ew = exec.writable.getWriter();
    await ew.write(encodeMessage({ type: "exec", argv: ["id"] }));
    const denied = await new FrameReader(exec.readable).message(ErrorMessage);
    assert.equal(denied.code, "auth.required");
    assert.ok(!m.logs.some((l) => l.includes('"exec.exit"')), "nothing ran");
    await conn.close();
  } finally {
    await sim.close();
  }
});
