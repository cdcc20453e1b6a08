/**
 * Freezing a machine's whole process tree with its memory, as Fly's suspend
 * keeps a VM's memory: init, the vault's namespace holder, consoles' shells
 * and whatever they run stop where they are and carry on when thawed. Its
 * QUIC socket is not read while frozen: datagrams queue in the kernel (and
 * drop when its buffer fills), as they would for a suspended VM.
 *
 * Two ways, the first that works:
 * - `cgroup2`: a cgroup per machine boot (under the cgroup v2 mount, e.g.
 *   `/sys/fs/cgroup/flysim/` or `/sys/fs/cgroup/unified/flysim/`); the
 *   machine's first process joins it before it execs, so every descendant
 *   is inside, whatever it forks or unshares. `cgroup.freeze` freezes them
 *   all at once; `cgroup.kill` ends them all when the machine stops, as a
 *   VM's processes end with it.
 * - `signals`: SIGSTOP to every descendant of the machine's first process
 *   (found through /proc, rescanned until no new one appears), SIGCONT to
 *   thaw. Less faithful: a program the user had stopped (Ctrl-Z) is
 *   continued too.
 *
 * `FLYSIM_FREEZER=signals` forces the fallback (tests of it).
 *
 * @module
 */
import { join } from "node:path";

/** How a machine's processes are frozen. */
export interface Freezer {
  readonly kind: "cgroup2" | "signals";
  /** The argv to spawn instead of `argv`, so the process starts inside the freezer's reach. */
  wrap(argv: string[]): string[];
  /** Freezes every process of the machine; resolves once all are frozen. */
  freeze(rootPid: number): Promise<void>;
  /** Thaws them; resolves once they run again. */
  thaw(rootPid: number): Promise<void>;
  /**
   * Kills every process of the machine where it stands, frozen or not (SIGKILL needs no
   * thaw): a machine whose snapshot fails to resume must not run again, not even for the
   * moment a thaw-then-kill would give it to answer the packets queued while it was frozen.
   */
  kill(rootPid: number): Promise<void>;
  /** After the machine's first process exited: ends what is left of the machine, cleans up. */
  release(): Promise<void>;
}

const SETTLE_MS = 5_000;

/** The cgroup v2 mount point, if one is mounted and we may make cgroups in it. */
async function cgroup2Root(): Promise<string | undefined> {
  let text: string;
  try {
    text = await Deno.readTextFile("/proc/self/mountinfo");
  } catch {
    return undefined;
  }
  for (const line of text.split("\n")) {
    // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL…] - FSTYPE SOURCE SUPEROPTS
    const [left, right] = line.split(" - ");
    if (!right?.startsWith("cgroup2 ")) continue;
    const mountPoint = left.split(" ")[4];
    if (mountPoint) return mountPoint.replace(/\\040/g, " ");
  }
  return undefined;
}

async function waitForEvent(dir: string, key: string, value: string): Promise<void> {
  const end = performance.now() + SETTLE_MS;
  const want = `${key} ${value}`;
  // cgroup.events changes within microseconds to milliseconds of the request; a short
  // poll bounded by SETTLE_MS is simpler than inotify on cgroupfs and as prompt.
  let delay = 1;
  while (true) {
    const events = await Deno.readTextFile(join(dir, "cgroup.events")).catch((err) =>
      err instanceof Deno.errors.NotFound ? undefined : ""
    );
    // Removed (release() after the machine's first process exited): only an empty one can be.
    if (events === undefined && want === "populated 0") return;
    if (events?.split("\n").includes(want)) return;
    if (performance.now() > end) {
      throw new Error(`${dir}: ${want} not reached within ${SETTLE_MS} ms`);
    }
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(20, delay * 2);
  }
}

/**
 * Removes machines' cgroups left empty by a flysim that was killed before it
 * could (an hour old: a cgroup just made is empty until its machine joins it).
 */
async function sweepStale(parent: string): Promise<void> {
  const hourAgo = Date.now() - 3_600_000;
  try {
    for await (const e of Deno.readDir(parent)) {
      if (!e.isDirectory) continue;
      const dir = join(parent, e.name);
      const info = await Deno.stat(dir).catch(() => undefined);
      if (!info?.mtime || info.mtime.getTime() > hourAgo) continue;
      const events = await Deno.readTextFile(join(dir, "cgroup.events")).catch(() => "");
      if (events.split("\n").includes("populated 0")) await Deno.remove(dir).catch(() => {});
    }
  } catch { /* nothing to sweep */ }
}

let swept = false;

async function cgroupFreezer(root: string, name: string): Promise<Freezer | undefined> {
  const parent = join(root, "flysim");
  const dir = join(parent, name);
  if (!swept) {
    swept = true;
    await sweepStale(parent);
  }
  try {
    await Deno.mkdir(dir, { recursive: true });
    await Deno.stat(join(dir, "cgroup.freeze"));
  } catch {
    await Deno.remove(dir).catch(() => {});
    return undefined;
  }
  return {
    kind: "cgroup2",
    wrap: (argv) => [
      "/bin/sh",
      "-c",
      // Join the cgroup first, then become the machine: nothing it starts escapes.
      'echo $$ > "$1" && shift && exec "$@"',
      "flysim-machine",
      join(dir, "cgroup.procs"),
      ...argv,
    ],
    async freeze() {
      await Deno.writeTextFile(join(dir, "cgroup.freeze"), "1");
      await waitForEvent(dir, "frozen", "1");
    },
    async thaw() {
      await Deno.writeTextFile(join(dir, "cgroup.freeze"), "0");
      await waitForEvent(dir, "frozen", "0");
    },
    async kill() {
      // cgroup.kill's SIGKILL ends frozen tasks too, without thawing them first. The root's
      // exit may run release() meanwhile, which removes the emptied cgroup: that is done too.
      await Deno.writeTextFile(join(dir, "cgroup.kill"), "1");
      await waitForEvent(dir, "populated", "0");
    },
    async release() {
      // A VM's processes end with it: whatever init left behind goes too.
      const events = await Deno.readTextFile(join(dir, "cgroup.events")).catch(() => "");
      if (events.split("\n").includes("populated 1")) {
        await Deno.writeTextFile(join(dir, "cgroup.freeze"), "0").catch(() => {});
        await Deno.writeTextFile(join(dir, "cgroup.kill"), "1").catch(() => {});
        await waitForEvent(dir, "populated", "0").catch(() => {});
      }
      await Deno.remove(dir).catch(() => {});
    },
  };
}

/** Parent pid of `pid` from /proc (undefined when it is gone). */
async function parentOf(pid: number): Promise<number | undefined> {
  const stat = await Deno.readTextFile(`/proc/${pid}/stat`).catch(() => undefined);
  if (!stat) return undefined;
  // The command name may hold spaces and parentheses: fields resume after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return Number(fields[1]);
}

/** `root` and every descendant of it now. */
async function treeOf(root: number): Promise<Set<number>> {
  const children = new Map<number, number[]>();
  for await (const e of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    const pid = Number(e.name);
    const ppid = await parentOf(pid);
    if (ppid === undefined) continue;
    const list = children.get(ppid);
    if (list) list.push(pid);
    else children.set(ppid, [pid]);
  }
  const out = new Set<number>([root]);
  const queue = [root];
  while (queue.length) {
    for (const c of children.get(queue.pop()!) ?? []) {
      if (!out.has(c)) {
        out.add(c);
        queue.push(c);
      }
    }
  }
  return out;
}

function signalsFreezer(): Freezer {
  let stopped = new Set<number>();
  const send = (pid: number, sig: Deno.Signal) => {
    try {
      Deno.kill(pid, sig);
    } catch { /* gone */ }
  };
  return {
    kind: "signals",
    wrap: (argv) => argv,
    async freeze(root) {
      stopped = new Set();
      // A process may fork between the scan and its stop: scan again until nothing is new.
      for (let round = 0; round < 20; round++) {
        let fresh = 0;
        for (const pid of await treeOf(root)) {
          if (stopped.has(pid)) continue;
          send(pid, "SIGSTOP");
          stopped.add(pid);
          fresh++;
        }
        if (fresh === 0) return;
      }
    },
    thaw() {
      for (const pid of stopped) send(pid, "SIGCONT");
      stopped = new Set();
      return Promise.resolve();
    },
    async kill(root) {
      // SIGKILL ends a stopped process as it is: no SIGCONT first.
      for (const pid of new Set([...stopped, ...await treeOf(root)])) send(pid, "SIGKILL");
      stopped = new Set();
    },
    release: () => Promise.resolve(),
  };
}

/** A freezer for one machine boot, named `name` (unique per boot). */
export async function createFreezer(name: string): Promise<Freezer> {
  if (Deno.env.get("FLYSIM_FREEZER") !== "signals" && Deno.uid() === 0) {
    const root = await cgroup2Root();
    const cg = root ? await cgroupFreezer(root, name) : undefined;
    if (cg) return cg;
  }
  return signalsFreezer();
}
