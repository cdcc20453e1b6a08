import assert from "node:assert/strict";
import {
  closeFd,
  InRootError,
  openInRoot,
  readFileInRoot,
  readImageConfig,
  removeTree,
} from "./mod.ts";

async function withRoot(fn: (root: string, host: string) => Promise<void>) {
  const work = await Deno.makeTempDir({ prefix: "fv-inroot-" });
  try {
    await Deno.mkdir(`${work}/rootfs/etc`, { recursive: true });
    await Deno.mkdir(`${work}/host`);
    await fn(`${work}/rootfs`, `${work}/host`);
  } finally {
    await removeTree(work);
  }
}

const decl = JSON.stringify({ Cmd: ["/bin/sh", "-c", "echo from the host"] });

Deno.test("readImageConfig: /.fly-vault -> a host directory is never read", async () => {
  await withRoot(async (root, host) => {
    await Deno.writeTextFile(`${host}/image.json`, decl);
    await Deno.symlink(host, `${root}/.fly-vault`);
    assert.equal(await readImageConfig(root), null);
    // Relative climbs stop at the rootfs's / as they would in a chroot.
    await Deno.remove(`${root}/.fly-vault`);
    await Deno.symlink(`../../../../../../..${host}`, `${root}/.fly-vault`);
    assert.equal(await readImageConfig(root), null);
    // A link whose final component leaves the rootfs too.
    await Deno.remove(`${root}/.fly-vault`);
    await Deno.mkdir(`${root}/.fly-vault`);
    await Deno.symlink(`${host}/image.json`, `${root}/.fly-vault/image.json`);
    assert.equal(await readImageConfig(root), null);
  });
});

Deno.test("readImageConfig: links that stay inside the rootfs resolve there", async () => {
  await withRoot(async (root) => {
    await Deno.mkdir(`${root}/opt/decl`, { recursive: true });
    await Deno.writeTextFile(`${root}/opt/decl/image.json`, decl);
    await Deno.symlink("/opt/decl", `${root}/.fly-vault`);
    assert.deepEqual((await readImageConfig(root))?.Cmd, ["/bin/sh", "-c", "echo from the host"]);
  });
});

Deno.test("readFileInRoot: a fifo or a directory is refused at once, never waited on", async () => {
  await withRoot(async (root) => {
    await Deno.mkdir(`${root}/.fly-vault`);
    const mk = await new Deno.Command("mkfifo", { args: [`${root}/.fly-vault/image.json`] })
      .output();
    assert.ok(mk.success);
    await assert.rejects(readImageConfig(root), { code: "rootfs.unsafe_path" });
    await assert.rejects(readFileInRoot(root, "etc", 100), { code: "rootfs.unsafe_path" });
    await Deno.writeTextFile(`${root}/etc/big`, "x".repeat(101));
    await assert.rejects(readFileInRoot(root, "etc/big", 100), { code: "rootfs.unsafe_path" });
    assert.equal(
      new TextDecoder().decode((await readFileInRoot(root, "/etc/big", 101))!),
      "x".repeat(101),
    );
  });
});

Deno.test("openInRoot: magic links refused; noSymlinks refuses any link on the way", async () => {
  await withRoot(async (root) => {
    await Deno.mkdir(`${root}/proc`);
    const mount = await new Deno.Command("mount", { args: ["-t", "proc", "proc", `${root}/proc`] })
      .output();
    assert.ok(mount.success);
    try {
      // /proc/self/root inside the rootfs is init's own / : a magic link.
      assert.throws(() => openInRoot(root, "proc/self/root/etc/hostname"), InRootError);
    } finally {
      await new Deno.Command("umount", { args: [`${root}/proc`] }).output();
    }
    await Deno.mkdir(`${root}/real`);
    await Deno.symlink("/real", `${root}/home`);
    closeFd(openInRoot(root, "home", { pathOnly: true }));
    assert.throws(
      () => openInRoot(root, "home", { pathOnly: true, noSymlinks: true }),
      (e: InRootError) => e.symlink,
    );
  });
});
