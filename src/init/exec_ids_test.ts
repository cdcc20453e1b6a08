import assert from "node:assert/strict";
import { createExecIds } from "./exec_ids.ts";

Deno.test("exec ids: an id is claimed once; the memory is bounded in count and time", () => {
  const ids = createExecIds(3, 1_000);
  assert.equal(ids.claim("a", 0), true);
  assert.equal(ids.claim("a", 10), false, "the same id again");
  assert.equal(ids.claim("b", 20), true);
  assert.equal(ids.claim("c", 30), true);
  assert.equal(ids.claim("d", 40), true, "a fourth pushes the oldest out");
  assert.equal(ids.claim("a", 50), true, "forgotten: over the count");
  assert.equal(ids.claim("c", 900), false, "still remembered");
  assert.equal(ids.claim("c", 2_000), true, "forgotten: over the age");
});
