import assert from "node:assert/strict";
import { createAuthThrottle, tokensEqual } from "./auth.ts";

Deno.test("tokensEqual compares exactly, whatever the lengths", () => {
  assert.equal(tokensEqual("secret", "secret"), true);
  assert.equal(tokensEqual("secret", "secreT"), false);
  assert.equal(tokensEqual("secret", "secret-and-more"), false);
  assert.equal(tokensEqual("secret", ""), false);
});

Deno.test("failures double the delay per source, success resets it, quiet sources are forgotten", () => {
  let now = 0;
  const t = createAuthThrottle({ baseMs: 100, maxMs: 1000, forgetMs: 60_000, now: () => now });
  assert.equal(t.delayFor("a"), 0);
  const delays = [];
  for (let i = 0; i < 6; i++) {
    t.failed("a");
    delays.push(t.delayFor("a"));
  }
  assert.deepEqual(delays, [100, 200, 400, 800, 1000, 1000]);
  assert.equal(t.delayFor("b"), 0, "other sources are not slowed");
  t.succeeded("a");
  assert.equal(t.delayFor("a"), 0);
  t.failed("a");
  now += 60_001;
  assert.equal(t.delayFor("a"), 0);
});

Deno.test("the table is bounded: a flood of sources forgets the oldest", () => {
  const t = createAuthThrottle({ maxSources: 3 });
  for (const s of ["a", "b", "c", "d"]) t.failed(s);
  assert.equal(t.delayFor("a"), 0);
  assert.ok(t.delayFor("d") > 0);
});
