import assert from "node:assert/strict";
import { planCopy, splitRemote } from "./paths.ts";

Deno.test("cp paths: remote arguments", () => {
  assert.deepEqual(splitRemote("vault:/root/x"), { vault: "vault", path: "/root/x" });
  assert.deepEqual(splitRemote("myvault:"), { vault: "myvault", path: "/root" });
  assert.equal(splitRemote("./a:b"), null);
  assert.equal(splitRemote("/abs/path"), null);
  assert.deepEqual(planCopy(["a", "b", "vault:/tmp/"]), {
    direction: "upload",
    vault: "vault",
    sources: ["a", "b"],
    dest: "/tmp/",
  });
  assert.equal(planCopy(["v:/x", "v:/y", "."]).direction, "download");
  assert.throws(() => planCopy(["v:/x", "w:/y", "."]), /different vaults/);
  assert.throws(() => planCopy(["only"]), /source and a destination/);
});
