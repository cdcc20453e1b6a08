/**
 * Small filesystem helpers with the durability and safety rules provisioning
 * needs: atomic writes that survive a power cut, and tree removal that never
 * descends into a mount (a bind-mounted /data/persist must never be deleted
 * through an old rootfs).
 *
 * @module
 */
import { VaultError } from "../errors/mod.ts";

/** fsyncs a directory so a rename or create inside it is durable. */
export async function syncDir(dir: string): Promise<void> {
  const f = await Deno.open(dir, { read: true });
  try {
    await f.sync();
  } finally {
    f.close();
  }
}

/** Writes `data` to `path` atomically: temp file, fsync, rename, fsync of the directory. */
export async function writeFileAtomic(path: string, data: string | Uint8Array): Promise<void> {
  const dir = path.slice(0, path.lastIndexOf("/")) || "/";
  const tmp = `${path}.tmp-${Deno.pid}-${crypto.randomUUID().slice(0, 8)}`;
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  const f = await Deno.open(tmp, { write: true, create: true, truncate: true, mode: 0o600 });
  try {
    let off = 0;
    while (off < bytes.length) off += await f.write(bytes.subarray(off));
    await f.sync();
  } finally {
    f.close();
  }
  await Deno.rename(tmp, path);
  await syncDir(dir);
}

function unescapeMount(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o) => String.fromCharCode(parseInt(o, 8)));
}

/** Mount points at or below `path` in this process's mount namespace, deepest first. */
export async function mountsUnder(path: string): Promise<string[]> {
  let text: string;
  try {
    text = await Deno.readTextFile("/proc/self/mountinfo");
  } catch {
    return [];
  }
  const base = path.replace(/\/+$/, "");
  const out: string[] = [];
  for (const line of text.split("\n")) {
    const mp = line.split(" ")[4];
    if (!mp) continue;
    const p = unescapeMount(mp);
    if (p === base || p.startsWith(base + "/")) out.push(p);
  }
  return out.sort((a, b) => b.length - a.length);
}

/** True when `path` is itself a mount point. */
export async function isMountPoint(path: string): Promise<boolean> {
  return (await mountsUnder(path)).includes(path.replace(/\/+$/, ""));
}

/** Unmounts everything at or below `path`, deepest first (lazily when busy). */
export async function unmountUnder(path: string): Promise<void> {
  for (let round = 0; round < 3; round++) {
    const mounts = await mountsUnder(path);
    if (mounts.length === 0) return;
    for (const mp of mounts) {
      const r = await new Deno.Command("umount", { args: [mp], stderr: "null" }).output();
      if (!r.success) {
        await new Deno.Command("umount", { args: ["-l", mp], stderr: "null" }).output();
      }
    }
  }
  const left = await mountsUnder(path);
  if (left.length) {
    throw new VaultError(
      "rootfs.busy",
      `cannot unmount ${left.join(", ")}`,
      "stop what uses the rootfs and retry",
    );
  }
}

/**
 * Removes a tree, first unmounting anything mounted inside it, and refusing
 * to go on while a mount remains: removing through a bind mount would
 * delete the persisted /root or /home.
 */
export async function removeTree(path: string): Promise<void> {
  await unmountUnder(path);
  try {
    await Deno.remove(path, { recursive: true });
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
}

/** True when `path` exists (without following a final symlink). */
export async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}
