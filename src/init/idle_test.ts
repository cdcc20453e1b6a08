import assert from "node:assert/strict";
import {
  createIdleSuspender,
  DEFAULT_IDLE_SUSPEND_MS,
  parseIdleSuspend,
  socketSuspend,
} from "./idle.ts";
import { isVaultError } from "../errors/mod.ts";
import { join } from "node:path";

Deno.test("FLY_VAULT_IDLE_SUSPEND: durations, off, default, and refusals", () => {
  assert.equal(parseIdleSuspend(undefined), DEFAULT_IDLE_SUSPEND_MS);
  assert.equal(parseIdleSuspend("15m"), 15 * 60_000);
  assert.equal(parseIdleSuspend("90s"), 90_000);
  assert.equal(parseIdleSuspend("2h"), 7_200_000);
  assert.equal(parseIdleSuspend("2"), 2_000);
  assert.equal(parseIdleSuspend("500ms"), 500);
  for (const off of ["off", "OFF", "no", "0", "never"]) assert.equal(parseIdleSuspend(off), 0);
  for (const bad of ["soon", "-5m", "10 minutes", "5ms"]) {
    assert.throws(
      () => parseIdleSuspend(bad),
      (e) => isVaultError(e) && e.code === "init.bad_config",
    );
  }
});

Deno.test("idle suspender: suspends only when no connection has been open for the idle time", async () => {
  const events: string[] = [];
  let asked = Promise.withResolvers<number>();
  let resume = Promise.withResolvers<void>();
  const t0 = performance.now();
  const idle = createIdleSuspender({
    idleMs: 200,
    suspend: () => {
      asked.resolve(performance.now());
      return resume.promise;
    },
    log: (e) => events.push(e),
  });
  try {
    // A connection open across the idle time keeps it up; its close starts the clock afresh.
    const done = idle.connected();
    assert.equal(idle.active, 1);
    const held = await Promise.race([
      asked.promise.then(() => "suspended"),
      new Promise((r) => setTimeout(() => r("held"), 400)),
    ]);
    assert.equal(held, "held");
    const closedAt = performance.now();
    done();
    done(); // twice is once
    assert.equal(idle.active, 0);
    const at = await asked.promise;
    assert.ok(at - closedAt >= 190, `suspended ${at - closedAt} ms after the last close`);
    assert.ok(at - t0 >= 590);
    assert.deepEqual(events, ["idle.suspend"]);
    // The reply comes once the machine runs again; then the next idle time starts.
    asked = Promise.withResolvers<number>();
    const resumedAt = performance.now();
    resume.resolve();
    resume = Promise.withResolvers<void>();
    const again = await asked.promise;
    assert.ok(again - resumedAt >= 190);
    assert.deepEqual(events, ["idle.suspend", "idle.resumed", "idle.suspend"]);
    resume.reject(new Error("refused"));
  } finally {
    idle.close();
  }
});

Deno.test("socketSuspend: POSTs the machine's own suspend path; a refusal is an error", async () => {
  const dir = await Deno.makeTempDir();
  const path = join(dir, "api");
  const seen: string[] = [];
  let status = 200;
  const server = Deno.serve({ path, transport: "unix", onListen: () => {} }, (req) => {
    seen.push(`${req.method} ${new URL(req.url).host}${new URL(req.url).pathname}`);
    return Response.json(status === 200 ? { ok: true } : { error: "nope" }, { status });
  });
  try {
    const suspend = socketSuspend({ socketPath: path, app: "vault-tenants", machineId: "abc123" });
    await suspend();
    assert.deepEqual(seen, ["POST flaps/v1/apps/vault-tenants/machines/abc123/suspend"]);
    status = 403;
    await assert.rejects(suspend(), (e) => isVaultError(e) && /403.*nope/.test(e.message));
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});
