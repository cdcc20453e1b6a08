import assert from "node:assert/strict";
import { createCollector, loadGc } from "./gc.ts";

Deno.test("collects after every N closed connections, at most once per interval", async () => {
  let runs = 0;
  let ran: (() => void) | undefined;
  const c = createCollector({
    every: 3,
    minIntervalMs: 100,
    gc: () => {
      runs++;
      ran?.();
    },
  });
  c.closed();
  c.closed();
  assert.equal(runs, 0);
  c.closed();
  assert.equal(runs, 1, "the third close collects at once");
  const started = performance.now();
  const second = new Promise<void>((r) => ran = r);
  for (let i = 0; i < 6; i++) c.closed();
  assert.equal(runs, 1, "too soon: deferred, and only once");
  // The collector's own timer is unref'd; this one keeps the test alive and bounds the wait.
  let guard: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([
    second,
    new Promise((_, reject) => guard = setTimeout(() => reject(new Error("no run")), 2_000)),
  ]);
  clearTimeout(guard);
  assert.equal(runs, 2);
  assert.ok(performance.now() - started >= 90, "waited out the interval");
});

Deno.test("Deno exposes V8's collector (else closed connections' memory waits on V8's whim)", () => {
  const gc = loadGc();
  assert.equal(typeof gc, "function");
  gc!();
});
