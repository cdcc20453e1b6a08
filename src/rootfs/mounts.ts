/**
 * The mounts a workload needs inside the rootfs: persisted /root and /home
 * (bind), /proc, /sys, a minimal /dev (tmpfs with the usual nodes bound from
 * the host, as rootless containers do, and a devpts instance of its own at
 * /dev/pts) and /etc/resolv.conf.
 *
 * Every mount point is checked component by component with lstat first:
 * mount(2) follows symlinks, and a tenant image whose `/root` is a symlink
 * to `/../../etc` must not get a bind mount onto the host's /etc.
 *
 * @module
 */
import { VaultError } from "../errors/mod.ts";
import { isMountPoint, unmountUnder } from "./fsutil.ts";
import { closeFd, InRootError, openInRoot } from "./inroot.ts";
import type { StorePaths } from "./store.ts";

const DEV_NODES = ["null", "zero", "full", "random", "urandom", "tty"];

async function run(args: string[]): Promise<void> {
  const r = await new Deno.Command(args[0], { args: args.slice(1), stderr: "piped" }).output()
    .catch((err) => ({ success: false, stderr: new TextEncoder().encode(String(err)) }));
  if (!r.success) {
    const text = new TextDecoder().decode(r.stderr).trim();
    const denied = /permission denied|must be superuser|not permitted/i.test(text);
    throw new VaultError(
      denied ? "rootfs.mount_denied" : "rootfs.mount_failed",
      `${args.join(" ")}: ${text}`,
      denied
        ? "mounting needs root (or a user+mount namespace: unshare --user --map-root-user --mount)"
        : "",
    );
  }
}

/**
 * Runs `mount --no-canonicalize ARGS… /proc/self/fd/N` where N is `rel` opened
 * inside `root` with no symlink allowed on the way ({@link openInRoot}): the
 * kernel mounts onto exactly the directory that was checked, even if the
 * path were changed in between (mount(8) would otherwise resolve it again).
 */
async function mountOnto(root: string, rel: string, args: string[]): Promise<void> {
  let fd: number;
  try {
    fd = openInRoot(root, rel, { pathOnly: true, noSymlinks: true, inherit: true });
  } catch (err) {
    if (err instanceof InRootError) {
      throw new VaultError(
        "rootfs.unsafe_mount_point",
        `/${rel} cannot be opened inside the rootfs without following a link (errno ${err.errno})`,
        "make it a directory in the image",
      );
    }
    throw err;
  }
  try {
    await run(["mount", "--no-canonicalize", ...args, `/proc/self/fd/${fd}`]);
  } finally {
    closeFd(fd);
  }
}

/**
 * Makes sure `rel` (relative, inside `root`) is a real directory or file,
 * creating the last component when missing, refusing a symlink anywhere.
 */
async function safeTarget(root: string, rel: string, kind: "dir" | "file"): Promise<string> {
  const parts = rel.split("/").filter(Boolean);
  let cur = root;
  for (let i = 0; i < parts.length; i++) {
    cur = `${cur}/${parts[i]}`;
    const last = i === parts.length - 1;
    let st: Deno.FileInfo | undefined;
    try {
      st = await Deno.lstat(cur);
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    }
    if (!st) {
      if (last && kind === "file") await Deno.writeFile(cur, new Uint8Array(0), { mode: 0o644 });
      else await Deno.mkdir(cur, { mode: 0o755 });
      continue;
    }
    if (st.isSymlink) {
      throw new VaultError(
        "rootfs.unsafe_mount_point",
        `/${parts.slice(0, i + 1).join("/")} is a symlink in the rootfs; will not mount over it`,
        "make it a directory in the image",
      );
    }
    if (last ? (kind === "dir" ? !st.isDirectory : !st.isFile) : !st.isDirectory) {
      throw new VaultError(
        "rootfs.unsafe_mount_point",
        `/${parts.slice(0, i + 1).join("/")} has the wrong type for a mount point`,
      );
    }
  }
  return cur;
}

/**
 * What each top-level mount point may be in an image, and what happens when it is
 * not a plain directory (a symlink, a file, a device):
 * - `/root`, `/home`: refused. The persisted data is mounted there; an image that
 *   turns them into a link or a file would leave the user writing into the rootfs
 *   (lost at the next provision) while the persisted data sits hidden.
 * - `/proc`, `/sys`, `/dev`: replaced by an empty directory, with a note. A kernel
 *   filesystem or init's tmpfs is mounted over them, so nothing the image put there
 *   would ever be visible anyway.
 * `/etc/resolv.conf` is checked at mount time: a symlink (systemd-resolved images)
 * is left alone with a note.
 */
export const MOUNT_POINTS: ReadonlyArray<{ path: string; policy: "refuse" | "replace" }> = [
  { path: "root", policy: "refuse" },
  { path: "home", policy: "refuse" },
  { path: "proc", policy: "replace" },
  { path: "sys", policy: "replace" },
  { path: "dev", policy: "replace" },
];

function describe(st: Deno.FileInfo, target: string | null): string {
  if (st.isSymlink) return `a symlink (-> ${target ?? "?"})`;
  if (st.isFile) return "a regular file";
  if (st.isFifo) return "a fifo";
  if (st.isCharDevice || st.isBlockDevice) return "a device";
  if (st.isSocket) return "a socket";
  return "not a directory";
}

/**
 * Checks the mount points of a freshly extracted tree (before it is swapped
 * in): refuses `rootfs.bad_mount_point` naming the entry, or replaces it with an
 * empty directory and returns a note, as {@link MOUNT_POINTS} says.
 */
export async function checkMountPoints(root: string): Promise<string[]> {
  const notes: string[] = [];
  for (const { path, policy } of MOUNT_POINTS) {
    const host = `${root}/${path}`;
    let st: Deno.FileInfo;
    try {
      st = await Deno.lstat(host);
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) continue; // created at mount time
      throw err;
    }
    if (st.isDirectory) continue;
    const target = st.isSymlink ? await Deno.readLink(host).catch(() => null) : null;
    const what = describe(st, target);
    if (policy === "refuse") {
      throw new VaultError(
        "rootfs.bad_mount_point",
        `/${path} in the image is ${what}: persistent /${path} is mounted there`,
        `make /${path} a directory in the image (fly-vault build does); nothing was changed`,
      );
    }
    await Deno.remove(host);
    await Deno.mkdir(host, { mode: 0o755 });
    notes.push(`/${path} in the image was ${what}; replaced by an empty directory (a mount point)`);
  }
  return notes;
}

/**
 * Fails loudly unless persist is mounted exactly on `<rootfs>/root` and
 * `<rootfs>/home` (per /proc/self/mountinfo): `ready` must mean the user's
 * files go to the volume, not into the rootfs.
 */
export async function verifyPersistMounts(rootfs: string): Promise<void> {
  const missing: string[] = [];
  for (const rel of ["root", "home"]) {
    if (!await isMountPoint(`${rootfs}/${rel}`)) missing.push(`/${rel}`);
  }
  if (missing.length) {
    throw new VaultError(
      "rootfs.mounts_missing",
      `persistent ${missing.join(" and ")} ${missing.length > 1 ? "are" : "is"} not mounted`,
      "check init's log (mounting needs root); reprovision with a plain image",
    );
  }
}

/**
 * Mounts everything under `paths.rootfs`. Returns notes about what was left
 * out (e.g. resolv.conf as a symlink). On failure, what was mounted is undone.
 */
export async function prepareMounts(paths: StorePaths): Promise<string[]> {
  const root = paths.rootfs;
  const notes: string[] = [];
  try {
    for (
      const [persist, rel, mode] of [
        [paths.persistRoot, "root", 0o700],
        [paths.persistHome, "home", 0o755],
      ] as const
    ) {
      await Deno.mkdir(persist, { recursive: true, mode });
      const target = await safeTarget(root, rel, "dir");
      if (!await isMountPoint(target)) await mountOnto(root, rel, ["--bind", persist]);
    }
    const proc = await safeTarget(root, "proc", "dir");
    if (!await isMountPoint(proc)) await mountOnto(root, "proc", ["-t", "proc", "proc"]);
    const sys = await safeTarget(root, "sys", "dir");
    if (!await isMountPoint(sys)) {
      await mountOnto(root, "sys", ["--rbind", "/sys"]);
      await run(["mount", "--make-rslave", sys]);
    }
    const dev = await safeTarget(root, "dev", "dir");
    if (!await isMountPoint(dev)) {
      await mountOnto(root, "dev", ["-t", "tmpfs", "-o", "mode=755,nosuid,size=65536k", "tmpfs"]);
      for (const n of DEV_NODES) {
        await Deno.writeFile(`${dev}/${n}`, new Uint8Array(0), { mode: 0o666 });
        await run(["mount", "--bind", `/dev/${n}`, `${dev}/${n}`]);
      }
      await Deno.mkdir(`${dev}/pts`);
      await Deno.mkdir(`${dev}/shm`, { mode: 0o1777 });
      await Deno.chmod(`${dev}/shm`, 0o1777);
      await Deno.symlink("/proc/self/fd", `${dev}/fd`);
      await Deno.symlink("/proc/self/fd/0", `${dev}/stdin`);
      await Deno.symlink("/proc/self/fd/1", `${dev}/stdout`);
      await Deno.symlink("/proc/self/fd/2", `${dev}/stderr`);
      // A devpts instance of the vault's own, never the machine's (whose terminals root
      // inside could open, read and type into): consoles get their PTYs from it (init opens
      // its ptmx), and so do tmux, sshd and script inside. The kernel keeps
      // kernel.pty.reserve PTYs for the machine's own instance. Group tty (5) as runc does,
      // unless it is not mapped (a user namespace: as rootless podman, without it).
      const devpts = "newinstance,ptmxmode=0666,mode=0620,nosuid,noexec";
      await run(["mount", "-t", "devpts", "-o", `${devpts},gid=5`, "devpts", `${dev}/pts`])
        .catch(() => run(["mount", "-t", "devpts", "-o", devpts, "devpts", `${dev}/pts`]));
      await Deno.symlink("pts/ptmx", `${dev}/ptmx`);
    }
    let resolv: string | undefined;
    try {
      resolv = await safeTarget(root, "etc/resolv.conf", "file");
    } catch (err) {
      if (!(err instanceof VaultError)) throw err;
      notes.push(`/etc/resolv.conf not mounted: ${err.message}`);
    }
    if (resolv && !await isMountPoint(resolv)) {
      // Bind, then make read-only: mount(8) cannot remount through the /proc/self/fd path.
      await mountOnto(root, "etc/resolv.conf", ["--bind", "/etc/resolv.conf"]);
      await run(["mount", "-o", "remount,bind,ro", resolv]);
    }
    await verifyPersistMounts(root);
    return notes;
  } catch (err) {
    await unmountUnder(root).catch(() => {});
    throw err;
  }
}

/** Unmounts everything below `rootfs` (deepest first). */
export async function releaseMounts(rootfs: string): Promise<void> {
  await unmountUnder(rootfs);
}
