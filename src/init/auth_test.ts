import assert from "node:assert/strict";
import { createAuthThrottle, tokensEqual } from "./auth.ts";

Deno.test("tokensEqual compares exactly, whatever the lengths", () => {
  assert.equal(tokensEqual("secret", "secret"), true);
  assert.equal(tokensEqual("secret", "secreT"), false);
  assert.equal(tokensEqual("secret", "secret-and-more"), false);
  assert.equal(tokensEqual("secret", ""), false);
});

Deno.test("wrong tokens wait longer per recent failure; quiet time forgets them", async () => {
  let now = 0;
  const t = createAuthThrottle({ baseMs: 1, maxMs: 8, halfLifeMs: 60_000, now: () => now });
  assert.equal(t.delayFor("a"), 0, "a first wrong token (a typo) is answered at once");
  const delays = [];
  for (let i = 0; i < 6; i++) {
    const r = await t.attempt("a", () => false);
    assert.ok(!("dropped" in r) && !r.ok);
    delays.push(r.delayedMs);
  }
  assert.deepEqual(delays, [0, 1, 2, 4, 8, 8]);
  now += 60_000 * 10;
  assert.equal(t.delayFor("a"), 0, "ten half-lives later the failures are forgotten");
});

Deno.test("failures from many sources slow every source (a quarter as fast)", async () => {
  const t = createAuthThrottle({ baseMs: 1, maxMs: 1024, now: () => 0 });
  for (let i = 0; i < 12; i++) await t.attempt(`s${i}`, () => false);
  assert.equal(t.delayFor("fresh"), 4, "12 machine-wide failures count as 3 from this source");
});

Deno.test("a correct token never waits, however many wrong ones are waiting", async () => {
  const t = createAuthThrottle({ baseMs: 5_000, maxMs: 5_000 });
  const guessers = new AbortController();
  // Twenty wrong guesses from the same source (the proxy's address), all waiting for verdicts.
  const wrong = Array.from({ length: 20 }, () => t.attempt("proxy", () => false, guessers.signal));
  assert.equal(t.pending(), 20);
  const started = performance.now();
  const right = await t.attempt("proxy", () => true);
  assert.deepEqual(right, { ok: true, delayedMs: 0 });
  assert.ok(performance.now() - started < 50, "accepted at once");
  assert.ok(t.delayFor("proxy") >= 5_000, "guessing did get slower");
  guessers.abort();
  const outcomes = await Promise.all(wrong);
  assert.ok(outcomes.every((o) => "dropped" in o));
  assert.equal(t.pending(), 0);
});

Deno.test("a verdict for a client that went is dropped: timer cleared, nothing waits", async () => {
  const t = createAuthThrottle({ baseMs: 60_000, maxMs: 60_000 });
  const gone = new AbortController();
  const verdict = t.attempt("a", () => false, gone.signal);
  assert.equal(t.pending(), 1);
  gone.abort();
  assert.deepEqual(await verdict, { ok: false, dropped: true });
  assert.equal(t.pending(), 0, "no timer left (the test's op sanitizer would also catch one)");
  const already = new AbortController();
  already.abort();
  assert.deepEqual(await t.attempt("a", () => false, already.signal), {
    ok: false,
    dropped: true,
  });
  assert.ok(t.delayFor("a") >= 60_000, "a dropped attempt still counts as a failure");
});

Deno.test("wrong attempts arriving together each wait their own growing delay", async () => {
  const t = createAuthThrottle({ baseMs: 10, maxMs: 1_000, now: () => 0 });
  const outcomes = await Promise.all([1, 2, 3, 4].map(() => t.attempt("a", () => false)));
  assert.deepEqual(outcomes.map((o) => "delayedMs" in o ? o.delayedMs : -1), [0, 10, 20, 40]);
});

Deno.test("the table is bounded: a flood of sources forgets the oldest", async () => {
  const t = createAuthThrottle({ baseMs: 1, maxSources: 3, machineShare: 1e9, now: () => 0 });
  for (const s of ["a", "b", "c", "d"]) await t.attempt(s, () => false);
  assert.equal(t.delayFor("a"), 0);
  assert.equal(t.delayFor("d"), 1);
});
