/**
 * A small rootfs made from the host's own binaries and their libraries
 * (ldd), enough for a login shell, coreutils, stty, sleep, vi and tar.
 * Stand-in until src/flysim's shared hostRootfs helper lands.
 *
 * @module
 */
const BINARIES = [
  "/bin/bash",
  "/bin/sh",
  "/usr/bin/env",
  "/usr/bin/stty",
  "/usr/bin/sleep",
  "/usr/bin/ls",
  "/usr/bin/cat",
  "/usr/bin/echo",
  "/usr/bin/true",
  "/usr/bin/tput",
  "/usr/bin/clear",
  "/usr/bin/vim.basic",
  "/usr/bin/tar",
  "/usr/bin/head",
  "/usr/bin/id",
  "/usr/bin/tty",
];

async function run(cmd: string, args: string[]): Promise<string> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "null" }).output();
  return new TextDecoder().decode(out.stdout);
}

async function copyInto(root: string, path: string): Promise<void> {
  const real = await Deno.realPath(path);
  const dest = root + path;
  await Deno.mkdir(dest.slice(0, dest.lastIndexOf("/")), { recursive: true });
  await Deno.copyFile(real, dest);
  const st = await Deno.stat(real);
  await Deno.chmod(dest, st.mode! & 0o7777);
}

/** Builds the rootfs in a new temp dir and returns its path. */
export async function buildTestRootfs(): Promise<string> {
  const root = await Deno.makeTempDir({ prefix: "fv-rootfs-" });
  const libs = new Set<string>();
  for (const bin of BINARIES) {
    try {
      await Deno.stat(bin);
    } catch {
      continue;
    }
    await copyInto(root, bin);
    for (const m of (await run("ldd", [bin])).matchAll(/(\/[^\s]+)/g)) libs.add(m[1]);
  }
  for (const lib of libs) await copyInto(root, lib).catch(() => {});
  await Deno.symlink("vim.basic", `${root}/usr/bin/vi`);
  // Debian's /bin may be a symlink to usr/bin; make both spellings work.
  for (const dir of ["bin", "lib", "lib64"]) {
    try {
      await Deno.lstat(`${root}/${dir}`);
    } catch {
      await Deno.symlink(`usr/${dir}`, `${root}/${dir}`).catch(() => {});
    }
  }
  await Deno.mkdir(`${root}/root`, { recursive: true });
  await Deno.mkdir(`${root}/tmp`, { recursive: true, mode: 0o1777 });
  await Deno.mkdir(`${root}/etc`, { recursive: true });
  await Deno.writeTextFile(`${root}/etc/passwd`, "root:x:0:0:root:/root:/bin/bash\n");
  await Deno.writeTextFile(`${root}/etc/group`, "root:x:0:\n");
  await Deno.mkdir(`${root}/usr/share/terminfo/x`, { recursive: true });
  for (const t of ["xterm", "xterm-256color"]) {
    await Deno.copyFile(`/lib/terminfo/x/${t}`, `${root}/usr/share/terminfo/x/${t}`).catch(
      () => {},
    );
  }
  await Deno.writeTextFile(`${root}/root/.vimrc`, "set nocompatible\n");
  // A quiet, predictable prompt for tests.
  await Deno.writeTextFile(`${root}/root/.bash_profile`, "PS1='fv\\$ '\n");
  return root;
}
