/**
 * tar as the archive engine on both ends: here the client machine's GNU tar
 * (`create` streams an archive of named entries, symlinks as links, modes
 * and mtimes recorded; `extract` unpacks a stream into a directory keeping
 * modes and mtimes), in the vault the vault's own tar run by the agent with
 * the same options (GNU or busybox). Owners are not carried over (like scp):
 * files belong to whoever receives them. {@link tarError} reads either's
 * complaints.
 *
 * @module
 */
import { VaultError } from "../errors/mod.ts";
import { splitPath } from "./paths.ts";

/** Turns tar's complaint into a stable error (`copy.no_space`, …). */
export function tarError(stderr: string, action: "read" | "write"): VaultError {
  const lines = stderr.trim().split("\n").filter((l) => l && !/Exiting with failure/.test(l));
  const line = (lines[0] ?? "tar failed").replace(/^\S*tar: /, "");
  // GNU tar reports a full disk as a short write ("Wrote only N of M bytes") as often as ENOSPC.
  if (/No space left on device|Disk quota exceeded|Wrote only \d+ of \d+ bytes/i.test(stderr)) {
    return new VaultError("copy.no_space", `disk full: ${line}`, "free some space and copy again");
  }
  if (/Permission denied/i.test(stderr)) {
    return new VaultError("copy.permission", line, "check the permissions of the paths involved");
  }
  return new VaultError(
    action === "read" ? "copy.read" : "copy.write",
    line,
    action === "read" ? "check the source paths" : "check the destination",
  );
}

/** A running `tar -c`: its stdout, and `done()` which throws a {@link VaultError} on failure. */
export function createArchive(paths: string[]): {
  stdout: ReadableStream<Uint8Array>;
  done(): Promise<void>;
  kill(): void;
} {
  const args = ["-c", "-f", "-", "--numeric-owner"];
  for (const p of paths) {
    const [dir, base] = splitPath(p);
    // `./name` so a name starting with '-' is not read as an option.
    args.push("-C", dir, `./${base}`);
  }
  const child = new Deno.Command("tar", { args, stdin: "null", stdout: "piped", stderr: "piped" })
    .spawn();
  const stderr = new Response(child.stderr).text();
  return {
    stdout: child.stdout,
    async done() {
      const status = await child.status;
      if (!status.success) throw tarError(await stderr, "read");
    },
    kill() {
      try {
        child.kill("SIGKILL");
      } catch {
        // already gone
      }
    },
  };
}

/** A running `tar -x` into `dir`: write to `stdin`, then `done()`. */
export function extractArchive(dir: string): {
  stdin: WritableStreamDefaultWriter<Uint8Array>;
  done(): Promise<void>;
  kill(): void;
} {
  const child = new Deno.Command("tar", {
    args: ["-x", "-f", "-", "-p", "--no-same-owner", "-C", dir],
    stdin: "piped",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(child.stderr).text();
  return {
    stdin: child.stdin.getWriter(),
    async done() {
      const status = await child.status;
      if (!status.success) throw tarError(await stderr, "write");
    },
    kill() {
      try {
        child.kill("SIGKILL");
      } catch {
        // already gone
      }
    },
  };
}
