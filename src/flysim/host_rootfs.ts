/**
 * A small rootfs made from what the host has (no download): bash,
 * coreutils and friends with the shared libraries `ldd` says they need.
 * It is what the demo provisions and what tests run commands in.
 *
 * @module
 */
import { dirname, join } from "node:path";

/** Programs copied when the host has them; the rootfs works with any subset that includes a shell. */
export const HOST_ROOTFS_PROGRAMS = [
  "bash",
  "sh",
  "dash",
  "env",
  "true",
  "false",
  "echo",
  "cat",
  "ls",
  "sleep",
  "uname",
  "id",
  "stty",
  "tty",
  "head",
  "tail",
  "wc",
  "printf",
  "kill",
  "grep",
  "sed",
  "mkdir",
  "rm",
  "cp",
  "mv",
  "chmod",
  "ln",
  "date",
  "hostname",
  "pwd",
  "touch",
  "sha256sum",
  "tr",
  "cut",
  "sort",
  "dd",
  "tar",
  "gzip",
  "ps",
  "top",
  "clear",
  "tput",
  "reset",
  "test",
  "[",
  "seq",
  "yes",
  "stat",
  "readlink",
  "basename",
  "dirname",
  "whoami",
  "nproc",
  "df",
  "du",
  "find",
  "xargs",
  "less",
  "more",
  "vi",
  "nano",
  "timeout",
  "tee",
]; // deno-fmt-ignore

async function which(program: string): Promise<string | undefined> {
  for (const dir of ["/usr/bin", "/bin", "/usr/sbin", "/sbin"]) {
    try {
      const path = join(dir, program);
      const info = await Deno.stat(path);
      if (info.isFile) return path;
    } catch { /* next */ }
  }
  return undefined;
}

async function libsOf(path: string): Promise<string[]> {
  const out = await new Deno.Command("ldd", { args: [path], stdout: "piped", stderr: "null" })
    .output();
  const text = new TextDecoder().decode(out.stdout);
  return [...text.matchAll(/(\/[^\s)]+)/g)].map((m) => m[1]);
}

async function copyPreservingLinks(src: string, root: string): Promise<void> {
  const dest = join(root, src);
  await Deno.mkdir(dirname(dest), { recursive: true });
  const info = await Deno.lstat(src);
  if (info.isSymlink) {
    const target = await Deno.readLink(src);
    await Deno.symlink(target, dest).catch(() => {});
    const resolved = target.startsWith("/") ? target : join(dirname(src), target);
    await copyPreservingLinks(resolved, root);
    return;
  }
  try {
    await Deno.lstat(dest);
    return; // already there
  } catch { /* copy */ }
  await Deno.copyFile(src, dest);
  await Deno.chmod(dest, info.mode! & 0o7777);
}

/**
 * Lays out a rootfs in `dir` (created if needed): programs from the host
 * with their libraries, /etc/passwd and friends, empty /proc /sys /dev /tmp.
 */
export async function buildHostRootfs(dir: string): Promise<void> {
  for (const d of ["root", "home", "tmp", "proc", "sys", "dev", "etc", "usr/bin", "run", "var"]) {
    await Deno.mkdir(join(dir, d), { recursive: true });
  }
  await Deno.chmod(join(dir, "tmp"), 0o1777);
  await Deno.chmod(join(dir, "root"), 0o700);
  // Debian's merged /usr: /bin → usr/bin keeps #!/bin/sh scripts working.
  for (const link of ["bin", "sbin", "lib", "lib64"]) {
    await Deno.mkdir(join(dir, "usr", link), { recursive: true });
    await Deno.symlink(`usr/${link}`, join(dir, link)).catch(() => {});
  }
  const files = new Set<string>();
  for (const program of HOST_ROOTFS_PROGRAMS) {
    const path = await which(program);
    if (!path) continue;
    files.add(path);
    for (const lib of await libsOf(path)) files.add(lib);
  }
  for (const file of files) {
    // Map /bin, /lib… onto /usr/… so they land behind the merged-/usr links.
    const merged = file.replace(/^\/(bin|sbin|lib|lib64)\//, "/usr/$1/");
    await copyPreservingLinks(file, dir).catch(async () => {
      await copyPreservingLinks(merged, dir).catch(() => {});
    });
  }
  const etc = (name: string, text: string) => Deno.writeTextFile(join(dir, "etc", name), text);
  await etc("passwd", "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/:/bin/sh\n");
  await etc("group", "root:x:0:\nnogroup:x:65534:\n");
  await etc("hostname", "vault\n");
  await etc("profile", 'PS1="\\u@vault:\\w\\$ "\nexport PS1\n');
  await Deno.writeTextFile(join(dir, "root", ".bashrc"), 'PS1="\\u@vault:\\w\\$ "\n');
  await etc(
    "os-release",
    'PRETTY_NAME="fly-vault demo rootfs (host binaries)"\nID=flyvault-demo\n',
  );
}

/** Writes the host rootfs as a tar.gz at `path` (GNU tar, numeric owners). */
export async function buildHostRootfsTarball(path: string): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "fly-vault-rootfs-" });
  try {
    await buildHostRootfs(dir);
    await Deno.mkdir(dirname(path), { recursive: true });
    const out = await new Deno.Command("tar", {
      args: ["-czf", path, "--numeric-owner", "-C", dir, "."],
      stderr: "piped",
    }).output();
    if (!out.success) throw new Error(new TextDecoder().decode(out.stderr));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}
