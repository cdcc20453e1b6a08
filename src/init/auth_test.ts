import assert from "node:assert/strict";
import { createAuthThrottle, tokensEqual } from "./auth.ts";

Deno.test("tokensEqual compares exactly, whatever the lengths", () => {
  assert.equal(tokensEqual("secret", "secret"), true);
  assert.equal(tokensEqual("secret", "secreT"), false);
  assert.equal(tokensEqual("secret", "secret-and-more"), false);
  assert.equal(tokensEqual("secret", ""), false);
});

Deno.test("failures double the delay per source, success resets it, quiet sources are forgotten", async () => {
  let now = 0;
  const t = createAuthThrottle({ baseMs: 1, maxMs: 8, forgetMs: 60_000, now: () => now });
  assert.equal(t.delayFor("a"), 0);
  const delays = [];
  for (let i = 0; i < 6; i++) {
    const r = await t.attempt("a", () => false);
    assert.ok(!("busy" in r) && !r.ok);
    delays.push(t.delayFor("a"));
  }
  assert.deepEqual(delays, [1, 2, 4, 8, 8, 8]);
  assert.equal(t.delayFor("b"), 0, "other sources are not slowed");
  await t.attempt("a", () => true);
  assert.equal(t.delayFor("a"), 0);
  await t.attempt("a", () => false);
  now += 60_001;
  assert.equal(t.delayFor("a"), 0);
});

Deno.test("parallel attempts from one source run one after another, each with its delay", async () => {
  const t = createAuthThrottle({ baseMs: 40, maxPending: 4 });
  const started = performance.now();
  const outcomes = await Promise.all([1, 2, 3, 4, 5].map(() => t.attempt("a", () => false)));
  const elapsed = performance.now() - started;
  assert.deepEqual(outcomes[4], { busy: true }, "a fifth queued attempt is refused outright");
  assert.deepEqual(
    outcomes.slice(0, 4).map((o) => "busy" in o ? "busy" : o.delayedMs),
    [0, 40, 80, 160],
    "no guess escapes the delay by arriving at the same time",
  );
  assert.ok(elapsed >= 280, `the queue took ${elapsed} ms`);
  const other = await t.attempt("b", () => true);
  assert.deepEqual(other, { ok: true, delayedMs: 0 });
});

Deno.test("the table is bounded: a flood of sources forgets the oldest", async () => {
  const t = createAuthThrottle({ maxSources: 3 });
  for (const s of ["a", "b", "c", "d"]) await t.attempt(s, () => false);
  assert.equal(t.delayFor("a"), 0);
  assert.ok(t.delayFor("d") > 0);
});
