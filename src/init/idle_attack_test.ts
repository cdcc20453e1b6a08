/**
 * The suspend call's reply is the environment's text: init reads a bounded part of it, and
 * what it repeats is inert for a terminal, however long or hostile the reply.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { isVaultError } from "../errors/mod.ts";
import { socketSuspend } from "./idle.ts";

/** An API socket answering `status` with an endless body of `chunk`. */
function endlessServer(path: string, status: number, chunk: string) {
  const bytes = new TextEncoder().encode(chunk.repeat(1024));
  let sent = 0;
  const server = Deno.serve({ path, transport: "unix", onListen: () => {} }, () => {
    const body = new ReadableStream<Uint8Array>({
      pull(c) {
        sent += bytes.length;
        c.enqueue(bytes);
      },
    });
    return new Response(body, { status });
  });
  return { server, sent: () => sent };
}

Deno.test("socketSuspend: an endless, hostile refusal is read in part and repeated inert", async () => {
  const dir = await Deno.makeTempDir();
  const path = join(dir, "api");
  const { server, sent } = endlessServer(path, 500, "\x1b]0;pwned\x07\x1b[2J\x9b31m");
  try {
    const suspend = socketSuspend({ socketPath: path, app: "a", machineId: "m", timeoutMs: 5_000 });
    const t0 = performance.now();
    await assert.rejects(suspend(), (e) => {
      assert.ok(isVaultError(e), `a VaultError, not ${String(e)}`);
      assert.equal(e.code, "init.suspend_refused");
      // deno-lint-ignore no-control-regex
      assert.doesNotMatch(e.message, /[\x00-\x08\x0b-\x1f\x7f-\x9f]/, "no control characters");
      assert.ok(e.message.length < 1000, `message of ${e.message.length} characters`);
      return true;
    });
    assert.ok(performance.now() - t0 < 2_000, "at once, not at the deadline");
    assert.ok(sent() < 16 * 1024 * 1024, `read ${sent()} bytes`);
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("socketSuspend: an accepted suspend with an endless body returns at once", async () => {
  const dir = await Deno.makeTempDir();
  const path = join(dir, "api");
  const { server } = endlessServer(path, 200, "x");
  try {
    const suspend = socketSuspend({ socketPath: path, app: "a", machineId: "m", timeoutMs: 5_000 });
    const t0 = performance.now();
    await suspend();
    assert.ok(performance.now() - t0 < 2_000, "the body is not read to its end");
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});
