/**
 * The vault: one mount and PID namespace per rootfs, shared by the workload,
 * consoles and exec (so `ps` in a console sees the workload, as on one
 * machine), with `pivot_root` into the rootfs so neither init, its
 * environment nor the machine's own filesystem is reachable from inside.
 *
 * A holder process (`unshare --mount --pid --fork`, then bash builtins only)
 * binds the rootfs onto itself, replaces init's /proc with a fresh one for
 * the new PID namespace, `pivot_root`s into it and stays as the namespace's
 * PID 1, reaping orphans, until its stdin (a pipe from init) closes. The old
 * root, stacked over `/` by `pivot_root . .`, is detached from outside
 * (`nsenter --mount -- umount -l /`): after the pivot the holder can run no
 * host program.
 *
 * Programs enter without an extra process in between: init's main thread
 * switches the PID namespace its *children* are created in (setns(2) on a
 * namespace fd, through FFI) just around the spawn, and the child runs
 * `nsenter --mount --root` (no fork), then the rootfs's `/usr/bin/env
 * --chdir`. So the spawned pid is the program itself: signals and exit codes
 * are exact. A PTY (node-pty) cannot be spawned that way (node-pty starts a
 * thread, which the kernel refuses while the PID namespace differs), so a
 * PTY runs `nsenter --pid` whose child takes the terminal over with
 * `setsid --ctty`; signals init sends go to that child ({@link innerPid}).
 *
 * @module
 */
import { VaultError } from "../errors/mod.ts";

const CLONE_NEWPID = 0x20000000;
const O_RDONLY_CLOEXEC = 0o2000000;

type Libc = {
  setns(fd: number, nstype: number): number;
  open(path: BufferSource, flags: number): number;
  close(fd: number): number;
};

let libc: Libc | undefined;

function lib(): Libc {
  if (libc) return libc;
  const dl = Deno.dlopen("libc.so.6", {
    setns: { parameters: ["i32", "i32"], result: "i32" },
    open: { parameters: ["buffer", "i32"], result: "i32" },
    close: { parameters: ["i32"], result: "i32" },
  });
  return libc = dl.symbols as unknown as Libc;
}

const cstr = (s: string) => new TextEncoder().encode(s + "\0");

let ownPidNs = -1;

function openNs(path: string): number {
  const fd = lib().open(cstr(path), O_RDONLY_CLOEXEC);
  if (fd < 0) throw new VaultError("init.namespace", `cannot open ${path}`);
  return fd;
}

/**
 * Runs `spawn` (synchronous: it must create its child and start no thread)
 * with the calling thread's children created in the PID namespace `nsFd`.
 */
function inPidNamespace<T>(nsFd: number, spawn: () => T): T {
  if (ownPidNs < 0) ownPidNs = openNs("/proc/self/ns/pid");
  if (lib().setns(nsFd, CLONE_NEWPID) !== 0) {
    throw new VaultError("init.namespace", "cannot enter the vault's PID namespace (setns)");
  }
  try {
    return spawn();
  } finally {
    if (lib().setns(ownPidNs, CLONE_NEWPID) !== 0) {
      // Every later child of init would start inside the vault: never go on like that.
      console.error("init: cannot return to its own PID namespace; exiting");
      Deno.exit(70);
    }
  }
}

// bash builtins only once pivoted: the host's programs are gone from its view.
// The rootfs path comes on stdin, not argv: no host path shows in the vault's `ps`.
const HOLDER_SCRIPT = `set -e
read -r R
mount --rbind -- "$R" "$R"
mount --make-rprivate -- "$R"
# init's /proc shows init's PID namespace: replace it with one for the vault's.
umount -l -- "$R/proc" 2>/dev/null || true
if [ -d "$R/proc" ] && [ ! -L "$R/proc" ]; then mount -t proc -o nosuid,nodev proc "$R/proc"; fi
cd -- "$R"
pivot_root . .
cd /
echo pivoted
while read -r _; do :; done
`;

/** A running vault namespace. */
export interface VaultNamespace {
  readonly rootfs: string;
  /** Host pid of the namespace's PID 1. */
  readonly holderPid: number;
  /** Resolves when the holder is gone (and with it every process inside). */
  readonly exited: Promise<void>;
  /** Spawns `argv` inside, working directory `cwd` (inside the rootfs), exactly `env`. */
  spawn(argv: string[], cwd: string, opts: SpawnOptions): Deno.ChildProcess;
  /** The argv a PTY runs to start `argv` inside (see {@link innerPid}). */
  ptyArgv(argv: string[], cwd: string): string[];
  /** Host pids of every process inside but the holder. */
  pids(): Promise<number[]>;
  /**
   * SIGTERM to everything inside, SIGKILL after `graceMs` (the holder's
   * death kills the whole namespace); resolves once it is all gone, with the
   * number of processes found.
   */
  stop(graceMs?: number): Promise<number>;
}

/** stdio and environment of {@link VaultNamespace.spawn}. */
export interface SpawnOptions {
  env: Record<string, string>;
  stdin?: "piped" | "null" | "inherit";
  stdout?: "piped" | "null" | "inherit";
  stderr?: "piped" | "null" | "inherit";
}

/** How long the holder may take to mount and pivot before init gives up on it. */
const START_TIMEOUT_MS = 15_000;

const HOST_ENV = { PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" };

async function run(args: string[]): Promise<void> {
  const out = await new Deno.Command(args[0], {
    args: args.slice(1),
    env: HOST_ENV,
    clearEnv: true,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new VaultError(
      "init.namespace",
      `${args.join(" ")}: ${new TextDecoder().decode(out.stderr).trim()}`,
    );
  }
}

async function nsLink(pid: number): Promise<string | null> {
  try {
    return await Deno.readLink(`/proc/${pid}/ns/pid`);
  } catch {
    return null;
  }
}

/** The first child of `pid` (the process an `nsenter --pid` started), or `pid` itself. */
export function innerPid(pid: number): number {
  try {
    const first = Deno.readTextFileSync(`/proc/${pid}/task/${pid}/children`).trim().split(" ")[0];
    if (first) return Number(first);
  } catch {
    // gone already
  }
  return pid;
}

/** Starts the vault namespace of `rootfs` (mounts already prepared, or none). */
export async function startNamespace(rootfs: string): Promise<VaultNamespace> {
  const holder = new Deno.Command("unshare", {
    args: [
      "--mount",
      "--pid",
      "--fork",
      "--kill-child",
      "--propagation",
      "private",
      "--",
      "bash",
      "-c",
      HOLDER_SCRIPT,
      "fly-vault-holder",
    ],
    env: HOST_ENV,
    clearEnv: true,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stdin = holder.stdin.getWriter();
  // Kept open: the holder ends when init's end of this pipe closes.
  await stdin.write(new TextEncoder().encode(rootfs + "\n"));
  const stderr = new Response(holder.stderr).text();
  const status = holder.status;
  const lines = holder.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const failed = async (why: string): Promise<never> => {
    try {
      holder.kill("SIGKILL");
    } catch { /* gone */ }
    await status;
    throw new VaultError(
      "init.namespace",
      `cannot set up the vault namespace: ${why} ${(await stderr).trim()}`.trim(),
      "init needs root, util-linux (unshare, nsenter, mount, umount, pivot_root) and bash",
    );
  };
  let timer: ReturnType<typeof setTimeout> | undefined;
  const first = await Promise.race([
    lines.read(),
    status.then(() => null),
    new Promise<null>((r) => timer = setTimeout(() => r(null), START_TIMEOUT_MS)),
  ]);
  clearTimeout(timer);
  if (!first || first.done || !first.value.includes("pivoted")) {
    return await failed("the holder did not start:");
  }
  lines.releaseLock();
  const holderPid = innerPid(holder.pid);
  if (holderPid === holder.pid) return await failed("no holder process");
  // Detach the machine's root, stacked over the vault's `/` by `pivot_root . .`.
  await run(["nsenter", `--target=${holderPid}`, "--mount", "--", "umount", "-l", "/"]).catch(
    (err) => failed(String(err.message)),
  );
  const nsFd = openNs(`/proc/${holderPid}/ns/pid`);
  const link = await nsLink(holderPid);
  let gone = false;
  const exited = status.then(() => {
    gone = true;
    lib().close(nsFd);
  });
  const enterArgv = (extra: string[], argv: string[], cwd: string) => [
    ...extra,
    "nsenter",
    `--target=${holderPid}`,
    "--mount",
    "--root",
    "--wd",
    "--",
    // `env --chdir` resolves the working directory inside the new root.
    "/usr/bin/env",
    `--chdir=${cwd}`,
    "--",
    ...argv,
  ];
  const pids = async () => {
    const found: number[] = [];
    if (!link) return found;
    for await (const entry of Deno.readDir("/proc")) {
      if (!/^\d+$/.test(entry.name)) continue;
      const pid = Number(entry.name);
      if (pid !== holderPid && await nsLink(pid) === link) found.push(pid);
    }
    return found;
  };
  return {
    rootfs,
    holderPid,
    exited,
    spawn(argv, cwd, opts) {
      if (gone) throw new VaultError("init.namespace", "the vault namespace has ended");
      const [cmd, ...args] = enterArgv([], argv, cwd);
      return inPidNamespace(nsFd, () =>
        new Deno.Command(cmd, {
          args,
          env: opts.env,
          clearEnv: true,
          stdin: opts.stdin ?? "null",
          stdout: opts.stdout ?? "inherit",
          stderr: opts.stderr ?? "inherit",
        }).spawn());
    },
    ptyArgv(argv, cwd) {
      if (gone) throw new VaultError("init.namespace", "the vault namespace has ended");
      // nsenter --pid forks; its child (in the vault) makes itself session leader and steals
      // the terminal, so ^C and ^Z reach the program only, not the nsenter left outside.
      return enterArgv(
        ["nsenter", `--target=${holderPid}`, "--pid", "--", "setsid", "--ctty"],
        argv,
        cwd,
      );
    },
    pids,
    async stop(graceMs = 2000) {
      if (gone) return 0;
      const found = await pids();
      for (const pid of found) {
        try {
          Deno.kill(pid, "SIGTERM");
        } catch { /* gone */ }
      }
      const deadline = Date.now() + graceMs;
      while (!gone && Date.now() < deadline && (await pids()).length > 0) {
        await new Promise((r) => setTimeout(r, 50));
      }
      // SIGKILL to a namespace's PID 1 from outside ends every process in it.
      for (const kill of [() => Deno.kill(holderPid, "SIGKILL"), () => holder.kill("SIGKILL")]) {
        try {
          kill();
        } catch { /* gone */ }
      }
      await exited;
      return found.length;
    },
  };
}

const vaults = new Map<string, Promise<VaultNamespace>>();

/** The running namespace of `rootfs`, started on first use (and again if it ended). */
export function ensureNamespace(rootfs: string): Promise<VaultNamespace> {
  const current = vaults.get(rootfs);
  if (current) return current;
  const started = startNamespace(rootfs);
  vaults.set(rootfs, started);
  started.then(
    (ns) => ns.exited.then(() => vaults.get(rootfs) === started && vaults.delete(rootfs)),
    () => vaults.get(rootfs) === started && vaults.delete(rootfs),
  );
  return started;
}

/** Ends the namespace of `rootfs` and everything in it (before a swap); how many processes it held. */
export async function stopNamespace(rootfs: string, graceMs = 2000): Promise<number> {
  const current = vaults.get(rootfs);
  if (!current) return 0;
  vaults.delete(rootfs);
  const ns = await current.catch(() => null);
  return ns ? await ns.stop(graceMs) : 0;
}
