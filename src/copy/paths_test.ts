import assert from "node:assert/strict";
import { planCopy, resolveInRoot, splitRemote } from "./paths.ts";

Deno.test("cp paths: symlinks resolve inside the rootfs, never out of it", async () => {
  const root = await Deno.realPath(await Deno.makeTempDir());
  try {
    await Deno.mkdir(`${root}/root/real`, { recursive: true });
    await Deno.symlink("/", `${root}/root/to-root`);
    await Deno.symlink("../../../../..", `${root}/root/up`);
    await Deno.symlink("/root/real", `${root}/root/abs`);
    await Deno.symlink("real", `${root}/root/rel`);
    assert.equal(await resolveInRoot(root, "/root/to-root/etc/passwd"), `${root}/etc/passwd`);
    assert.equal(await resolveInRoot(root, "/root/up/etc"), `${root}/etc`);
    assert.equal(await resolveInRoot(root, "/../../etc"), `${root}/etc`);
    assert.equal(await resolveInRoot(root, "/root/abs/x"), `${root}/root/real/x`);
    assert.equal(await resolveInRoot(root, "/root/rel/"), `${root}/root/real`);
    assert.equal(await resolveInRoot(root, "/root/rel", false), `${root}/root/rel`);
    await Deno.symlink("loop", `${root}/root/loop`);
    await assert.rejects(resolveInRoot(root, "/root/loop"), /too many symbolic links/);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

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
