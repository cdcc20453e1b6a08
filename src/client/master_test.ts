import assert from "node:assert/strict";
import {
  type ByteStream,
  ExecRequest,
  FrameReader,
  FrameWriter,
  ProtocolError,
} from "../protocol/mod.ts";
import { prepareExec } from "../init/exec.ts";
import { probeExecIds } from "./master.ts";
import { runExec } from "./exec.ts";

/** A client end and an init end of one in-memory stream. */
function pipePair(): { client: ByteStream; init: ByteStream } {
  const up = new TransformStream<Uint8Array, Uint8Array>();
  const down = new TransformStream<Uint8Array, Uint8Array>();
  return {
    client: { readable: down.readable, writable: up.writable },
    init: { readable: up.readable, writable: down.writable },
  };
}

/** The exec request schema of an init from before exec ids: strict, without `id`. */
const OldExecRequest = ExecRequest.omit({ id: true });

/** Answers one exec request as init's dispatch does: a bad message, or prepareExec's refusal. */
async function fakeInit(stream: ByteStream, schema: typeof ExecRequest | typeof OldExecRequest) {
  const reader = new FrameReader(stream.readable);
  const writer = new FrameWriter(stream.writable);
  try {
    const req = await reader.message(schema, "exec request");
    const run = await prepareExec(req as ExecRequest, "/");
    if (run.ok) throw new Error("the probe must never be runnable");
    await writer.send({ type: "error", code: run.code, message: run.message, hint: run.hint });
  } catch (err) {
    if (!(err instanceof ProtocolError)) throw err;
    await writer.send({ type: "error", code: err.code, message: err.message, hint: err.hint });
  }
  await writer.close();
}

function sessionWith(schema: typeof ExecRequest | typeof OldExecRequest) {
  const served: Promise<void>[] = [];
  return {
    served,
    openStream: () => {
      const { client, init } = pipePair();
      served.push(fakeInit(init, schema));
      return Promise.resolve(client);
    },
  };
}

Deno.test("exec ids: the master's probe tells an init that takes them from an older one", async () => {
  const current = sessionWith(ExecRequest);
  assert.equal(await probeExecIds(current), true);
  const old = sessionWith(OldExecRequest);
  assert.equal(await probeExecIds(old), false, "an older init refuses the field");
  await Promise.all([...current.served, ...old.served]);
});

Deno.test("exec ids: a request carries an id only when its stream offers one (an older init's shape otherwise)", async () => {
  for (const id of [undefined, "0123456789abcdef0123456789abcdef"]) {
    const { client, init } = pipePair();
    const stream = Object.assign(client, { execId: () => id });
    const sent = (async () => {
      const reader = new FrameReader(init.readable);
      const writer = new FrameWriter(init.writable);
      const frame = await reader.next();
      await writer.send({ type: "started", pid: 1 });
      await writer.send({ type: "exit", code: 0, signal: null });
      await writer.close();
      while (await reader.next()) { /* the client's eof */ }
      return frame?.kind === "message" ? frame.message as Record<string, unknown> : null;
    })();
    const out = new WritableStream<Uint8Array>();
    const status = await runExec(stream, { argv: ["true"], env: {}, tty: false }, {
      stdout: out,
      stderr: new WritableStream(),
    });
    assert.equal(status, 0);
    const req = await sent;
    assert.equal(req?.id, id);
    if (id === undefined) {
      assert.equal("id" in (req ?? {}), false);
      assert.equal(OldExecRequest.safeParse(req).success, true, "an older init takes it");
    }
  }
});

Deno.test("the fast path's own path helpers agree with node:path", async () => {
  const fast = await import("./master_fast.ts");
  const node = await import("node:path");
  for (const p of ["/a/b/c.toml", "rel/x.toml", "./x", "/a/../b/./c", "/", "a//b/", "../up/x"]) {
    assert.equal(fast.resolve(p), node.resolve(p), p);
    const abs = node.resolve(p);
    assert.equal(fast.dirname(abs), node.dirname(abs), abs);
  }
  assert.equal(fast.join("/run/u", "fly-vault"), node.join("/run/u", "fly-vault"));
  assert.equal(fast.join("/a/", "/b", "c.fast"), node.join("/a/", "/b", "c.fast"));
});
