/**
 * Paths for `cp`: telling remote from local arguments, and adding up local
 * sizes for the progress bar. Paths inside the vault are never resolved
 * here: the agent does that inside the vault (agent.ts).
 *
 * @module
 */
import { VaultError } from "../errors/mod.ts";

/** `NAME:/path` is remote (like scp); a local path with a colon is written `./a:b`. */
export function splitRemote(arg: string): { vault: string; path: string } | null {
  const m = /^([A-Za-z0-9][A-Za-z0-9_.-]*):(.*)$/.exec(arg);
  if (!m) return null;
  return { vault: m[1], path: m[2] === "" ? "/root" : m[2] };
}

/** What `cp SRC… DEST` asks for. */
export type CopyPlan =
  | { direction: "upload"; vault: string; sources: string[]; dest: string }
  | { direction: "download"; vault: string; sources: string[]; dest: string };

/** Splits `SRC… DEST` into one direction; mixing sides or vaults is an error. */
export function planCopy(args: string[]): CopyPlan {
  if (args.length < 2) {
    throw new VaultError(
      "copy.usage",
      "cp needs at least one source and a destination",
      "fly-vault cp [-r] SRC… DEST, with vault:/path for the remote side",
    );
  }
  const dest = args[args.length - 1];
  const sources = args.slice(0, -1);
  const remoteDest = splitRemote(dest);
  const remoteSources = sources.map(splitRemote);
  if (remoteDest) {
    if (remoteSources.some((r) => r)) {
      throw new VaultError(
        "copy.usage",
        "both sides are remote",
        "copy between the vault and this machine: one side local, one side vault:/path",
      );
    }
    return { direction: "upload", vault: remoteDest.vault, sources, dest: remoteDest.path };
  }
  if (remoteSources.some((r) => !r)) {
    throw new VaultError(
      "copy.usage",
      "no side is remote, or sources mix local and remote paths",
      "name the remote side as vault:/path (write a local path with a colon as ./a:b)",
    );
  }
  const vaults = new Set(remoteSources.map((r) => r!.vault));
  if (vaults.size > 1) {
    throw new VaultError("copy.usage", "sources name different vaults", "copy from one at a time");
  }
  return {
    direction: "download",
    vault: remoteSources[0]!.vault,
    sources: remoteSources.map((r) => r!.path),
    dest,
  };
}

/** Sum of regular-file sizes under `path` (not following links). */
export async function treeSize(path: string): Promise<number> {
  const info = await Deno.lstat(path);
  if (info.isFile) return info.size;
  if (!info.isDirectory) return 0;
  let total = 0;
  for await (const e of Deno.readDir(path)) {
    total += await treeSize(`${path}/${e.name}`).catch(() => 0);
  }
  return total;
}

/** `dirname`/`basename` of a cleaned path ("a/b/" → ["a", "b"]; "x" → [".", "x"]). */
export function splitPath(path: string): [string, string] {
  const clean = path.length > 1 ? path.replace(/\/+$/, "") : path;
  const i = clean.lastIndexOf("/");
  if (i < 0) return [".", clean];
  return [i === 0 ? "/" : clean.slice(0, i), clean.slice(i + 1)];
}
