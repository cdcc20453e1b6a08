/**
 * Receiving side of a download, on the client's machine: unpack into a
 * temporary directory next to the destination, then move each entry under
 * its final name with rename(2). A copy cut short leaves nothing under the
 * final name; a directory that already exists is merged entry by entry (each
 * file replaced atomically). Uploads do the same inside the vault, in the
 * agent (agent.ts): init never runs this on a tenant's paths.
 *
 * @module
 */
import { VaultError } from "../errors/mod.ts";
import { splitPath } from "./paths.ts";

/** Where the unpacked entries go. */
export type CommitTarget =
  /** Each top-level entry keeps its name inside `dir`. */
  | { mode: "into"; dir: string }
  /** The one top-level entry becomes `dir/name`. */
  | { mode: "as"; dir: string; name: string };

/**
 * Decides the target for `dest` (a host path) receiving `count` entries,
 * the way cp and scp do: an existing directory receives them; otherwise one
 * entry is renamed to `dest` in its (existing) parent directory.
 */
export async function commitTarget(dest: string, count: number): Promise<CommitTarget> {
  const info = await Deno.stat(dest).catch(() => null);
  if (info?.isDirectory) return { mode: "into", dir: dest };
  if (dest.endsWith("/")) {
    throw new VaultError(
      "copy.no_dest",
      `destination directory ${dest} does not exist`,
      "create it first, or drop the trailing '/' to copy under that name",
    );
  }
  if (count !== 1) {
    throw new VaultError(
      "copy.dest_not_dir",
      `copying ${count} entries needs a directory, and ${dest} is not one`,
      "name an existing directory as the destination",
    );
  }
  const [dir, name] = splitPath(dest);
  const parent = await Deno.stat(dir).catch(() => null);
  if (!parent?.isDirectory) {
    throw new VaultError(
      "copy.no_dest",
      `destination directory ${dir} does not exist`,
      "create it first (mkdir -p)",
    );
  }
  return { mode: "as", dir, name };
}

/** Creates the temporary directory inside the target's directory (same filesystem: rename works). */
export async function makeStaging(target: CommitTarget): Promise<string> {
  const path = `${target.dir}/.fly-vault-cp.${crypto.randomUUID().slice(0, 12)}`;
  await Deno.mkdir(path, { mode: 0o700 });
  return path;
}

async function moveMerge(from: string, to: string): Promise<void> {
  const src = await Deno.lstat(from);
  const dst = await Deno.lstat(to).catch(() => null);
  if (src.isDirectory && dst?.isDirectory) {
    for await (const e of Deno.readDir(from)) {
      await moveMerge(`${from}/${e.name}`, `${to}/${e.name}`);
    }
    // Keep the incoming directory's mode and times on the merged one.
    if (src.mode !== null) await Deno.chmod(to, src.mode & 0o7777);
    if (src.mtime) await Deno.utime(to, src.atime ?? src.mtime, src.mtime);
    await Deno.remove(from);
    return;
  }
  if (dst?.isDirectory) {
    throw new VaultError(
      "copy.is_directory",
      `${to} is a directory; not replacing it with a file`,
      "remove it first, or copy to another name",
    );
  }
  await Deno.rename(from, to);
}

/** Moves everything from `staging` to the target and removes `staging`. Returns the entry count. */
export async function commitStaging(staging: string, target: CommitTarget): Promise<number> {
  const entries: string[] = [];
  for await (const e of Deno.readDir(staging)) entries.push(e.name);
  if (target.mode === "as") {
    if (entries.length !== 1) {
      throw new VaultError("copy.bad_archive", `expected one entry, got ${entries.length}`, "");
    }
    await moveMerge(`${staging}/${entries[0]}`, `${target.dir}/${target.name}`);
  } else {
    for (const e of entries) await moveMerge(`${staging}/${e}`, `${target.dir}/${e}`);
  }
  await Deno.remove(staging, { recursive: true });
  return entries.length;
}

/** Removes a staging directory after a failure (best effort). */
export async function discardStaging(staging: string | null): Promise<void> {
  if (staging) await Deno.remove(staging, { recursive: true }).catch(() => {});
}
