/**
 * Programs on pseudo-terminals, byte-oriented: bytes in, bytes out, flow
 * control, resize, exit with a signal name. Everything else in this folder
 * is written against {@link Pty} so tests and the server share it.
 *
 * Two ways to get one. {@link spawnPty}: node-pty's forkpty, a PTY of the
 * machine's own devpts (tests, benchmarks, the laptop's `userns` fallback).
 * {@link spawnPtyInRootfs}: in the vault, the PTY comes from the vault's own
 * devpts instance (mounted at `<rootfs>/dev/pts` with `newinstance`, so the
 * machine's terminals are not visible inside): init opens its `ptmx` without
 * following any link, unlocks the pair and keeps the master; the program
 * enters the vault and takes `/dev/pts/N` as its controlling terminal by its
 * in-vault path, so `tty` names a file that exists there. The master is read
 * and written through the same tty stream node-pty uses, so keystrokes take
 * the same path as before.
 *
 * @module
 */
import pty from "node-pty";
import tty from "node:tty";
import { constants } from "node:os";
import { VaultError } from "../errors/mod.ts";
import { detectSandbox, ptyCommandInRootfs } from "../init/sandbox.ts";
import { ensureNamespace } from "../init/namespace.ts";
import { closeFd, openInRoot } from "../rootfs/inroot.ts";

/** A running program on a pseudo-terminal. */
export interface Pty {
  readonly pid: number;
  write(bytes: Uint8Array): void;
  resize(cols: number, rows: number): void;
  /** Stops reading output (the program blocks once the kernel buffer fills). */
  pause(): void;
  resume(): void;
  kill(signal?: string): void;
  onData(listener: (bytes: Uint8Array) => void): void;
  /** Called once, after all output was delivered. */
  onExit(listener: (exit: { code: number | null; signal: string | null }) => void): void;
}

const signalNames = new Map<number, string>(
  Object.entries(constants.signals).map(([name, n]) => [n as number, name]),
);

/** Spawns `argv` on a new PTY of `cols`×`rows`, with exactly `env`. */
export function spawnPty(
  argv: string[],
  opts: {
    cols: number;
    rows: number;
    env: Record<string, string>;
    term: string;
    /** Where a signal for the program goes, given the PTY's child (default: that child). */
    signalTarget?: (pid: number) => number;
  },
): Pty {
  const p = pty.spawn(argv[0], argv.slice(1), {
    name: opts.term,
    cols: opts.cols,
    rows: opts.rows,
    cwd: "/",
    env: opts.env,
    // Bytes, not strings: output is passed through untouched (OSC 52, invalid UTF-8, …).
    encoding: null,
  } as unknown as pty.IPtyForkOptions);
  // node-pty's own write path uses fs.write on the raw fd, which Deno's node
  // compatibility refuses (EBADF); the tty socket over the same fd works.
  const inner = p as unknown as {
    _fd?: number;
    _socket: { write(b: Uint8Array): boolean; once(ev: "close", f: () => void): void };
  };
  const socket = inner._socket;
  let exited = false;
  let open = true;
  socket.once("close", () => open = false);
  // As for the vault's PTYs (see masterInput); node-pty closes the master with its socket.
  const input = typeof inner._fd === "number"
    ? masterInput(inner._fd, () => open && !exited)
    : null;
  return {
    pid: p.pid,
    write(bytes) {
      if (exited || !bytes.length) return;
      if (input) input(bytes);
      else socket.write(bytes);
    },
    resize(cols, rows) {
      if (exited) return;
      try {
        p.resize(cols, rows);
      } catch {
        // The program exited between the check and the ioctl.
      }
    },
    pause: () => p.pause(),
    resume: () => p.resume(),
    kill(signal = "SIGHUP") {
      if (exited) return;
      try {
        Deno.kill(opts.signalTarget?.(p.pid) ?? p.pid, signal as Deno.Signal);
      } catch {
        // already gone
      }
    },
    onData(listener) {
      p.onData((d) => listener(d as unknown as Uint8Array));
    },
    onExit(listener) {
      p.onExit(({ exitCode, signal }) => {
        exited = true;
        const name = signal ? signalNames.get(signal) ?? `SIG${signal}` : null;
        listener({ code: name ? null : exitCode, signal: name });
      });
    },
  };
}

const O_RDWR = 2;
const O_NOCTTY = 0o400;
const O_NOFOLLOW = 0o400000;
const O_CLOEXEC = 0o2000000;
const DEVPTS_SUPER_MAGIC = 0x1cd1n;
// asm-generic ioctl numbers: the same on x86_64 and aarch64.
const TCGETS = 0x5401n;
const TCSETS = 0x5402n;
const TIOCSWINSZ = 0x5414n;
const TIOCGPTN = 0x80045430n;
const TIOCSPTLCK = 0x40045431n;
const FIONBIO = 0x5421n;
const EAGAIN = 11;
const POLLOUT = 4;
// As node-pty's forkpty sets them beyond the kernel's defaults (IUTF8: backspace over UTF-8).
const EXTRA_IFLAG = 0x2 /* BRKINT */ | 0x800 /* IXANY */ | 0x2000 /* IMAXBEL */ | 0x4000; // IUTF8

type Libc = {
  openat(dirfd: number, path: BufferSource, flags: number, mode: number): number;
  ioctl(fd: number, request: bigint, arg: BufferSource): number;
  write(fd: number, buf: Uint8Array, count: bigint): number | bigint;
  __errno_location(): Deno.PointerValue;
  poll(fds: BufferSource, nfds: bigint, timeout: number): Promise<number>;
  fstatfs(fd: number, buf: BufferSource): number;
  close(fd: number): number;
};

let libc: Libc | undefined;

function lib(): Libc {
  return libc ??= Deno.dlopen("libc.so.6", {
    openat: { parameters: ["i32", "buffer", "i32", "u32"], result: "i32" },
    ioctl: { parameters: ["i32", "u64", "buffer"], result: "i32" },
    write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
    __errno_location: { parameters: [], result: "pointer" },
    // On a worker thread: waits for room in a full PTY input queue without blocking init.
    poll: { parameters: ["buffer", "u64", "i32"], result: "i32", nonblocking: true },
    fstatfs: { parameters: ["i32", "buffer"], result: "i32" },
    close: { parameters: ["i32"], result: "i32" },
  }).symbols as unknown as Libc;
}

function winsize(cols: number, rows: number): Uint8Array<ArrayBuffer> {
  return new Uint8Array(new Uint16Array([rows, cols, 0, 0]).buffer);
}

/** The master side of a PTY pair of a rootfs's own devpts, and the pair's number there. */
interface VaultPtyPair {
  master: number;
  index: number;
}

/**
 * Allocates a PTY pair from the devpts instance mounted at `<rootfs>/dev/pts`.
 * Returns null when that is not a devpts of its own (no mounts made, as in
 * unit tests' bare rootfs, or the machine's devpts itself): the caller falls
 * back to the machine's PTYs, which the vault then cannot name either.
 */
export function openVaultPty(rootfs: string, cols: number, rows: number): VaultPtyPair | null {
  let dir: number;
  try {
    dir = openInRoot(rootfs, "dev/pts", { pathOnly: true, noSymlinks: true });
  } catch {
    return null;
  }
  const l = lib();
  let master = -1;
  try {
    const fs = new BigInt64Array(15); // struct statfs; f_type first
    if (l.fstatfs(dir, new Uint8Array(fs.buffer)) !== 0 || BigInt(fs[0]) !== DEVPTS_SUPER_MAGIC) {
      return null;
    }
    // The same instance as the machine's /dev/pts: never hand the vault one of those.
    if (Deno.statSync(`/proc/self/fd/${dir}`).dev === Deno.statSync("/dev/pts").dev) return null;
    master = l.openat(
      dir,
      new TextEncoder().encode("ptmx\0"),
      O_RDWR | O_NOCTTY | O_NOFOLLOW | O_CLOEXEC,
      0,
    );
    if (master < 0) throw new VaultError("console.pty", "cannot open the vault's /dev/pts/ptmx");
    const n = new Int32Array(1);
    if (l.ioctl(master, TIOCSPTLCK, new Uint8Array(n.buffer)) !== 0) {
      throw new VaultError("console.pty", "cannot unlock a vault PTY");
    }
    if (l.ioctl(master, TIOCGPTN, new Uint8Array(n.buffer)) !== 0) {
      throw new VaultError("console.pty", "cannot number a vault PTY");
    }
    const termios = new Uint32Array(16);
    if (l.ioctl(master, TCGETS, new Uint8Array(termios.buffer)) === 0) {
      termios[0] |= EXTRA_IFLAG;
      l.ioctl(master, TCSETS, new Uint8Array(termios.buffer));
    }
    l.ioctl(master, TIOCSWINSZ, winsize(cols, rows));
    const pair = { master, index: n[0] };
    master = -1;
    return pair;
  } finally {
    if (master >= 0) l.close(master);
    closeFd(dir);
  }
}

/**
 * Writes keyboard input to a PTY master with write(2), in the caller's turn:
 * a tty socket's write path costs a few dozen µs of JS and an async op per
 * key, and it loses input once the PTY's input queue (4 KiB) is full. What
 * the queue cannot take yet waits, in order, until poll(2) (on a worker
 * thread) says there is room. The master is made non-blocking, so a full
 * queue never stalls the event loop. Null when that cannot be done.
 */
function masterInput(fd: number, isOpen: () => boolean): ((bytes: Uint8Array) => void) | null {
  const l = lib();
  if (l.ioctl(fd, FIONBIO, new Uint8Array(new Int32Array([1]).buffer)) !== 0) return null;
  const queued: Uint8Array[] = [];
  let flushing = false;
  /** Bytes written, 0 when the queue is full, -1 when the PTY is gone (EIO) or broken. */
  const writeSome = (bytes: Uint8Array): number => {
    const n = Number(l.write(fd, bytes, BigInt(bytes.length)));
    if (n >= 0) return n;
    return new Deno.UnsafePointerView(l.__errno_location()!).getInt32() === EAGAIN ? 0 : -1;
  };
  const flush = async () => {
    flushing = true;
    const pollfd = new Uint8Array(8);
    new DataView(pollfd.buffer).setInt32(0, fd, true);
    new DataView(pollfd.buffer).setInt16(4, POLLOUT, true);
    while (queued.length && isOpen()) {
      const n = writeSome(queued[0]);
      if (n < 0) break;
      if (n === queued[0].length) queued.shift();
      else {
        queued[0] = queued[0].subarray(n);
        // Bounded, so a closed master is noticed.
        await l.poll(pollfd, 1n, 100);
      }
    }
    queued.length = 0;
    flushing = false;
  };
  return (bytes) => {
    if (!isOpen() || !bytes.length) return;
    if (!queued.length) {
      const n = writeSome(bytes);
      if (n < 0 || n === bytes.length) return;
      bytes = bytes.subarray(n);
    }
    // The caller's buffer may be reused once we return.
    queued.push(bytes.slice());
    if (!flushing) void flush();
  };
}

/** How long output may still arrive after the program exited (as node-pty waits). */
const DRAIN_MS = 200;

/**
 * A {@link Pty} over `master` (owned from here on: closed on every path) and
 * `child`, the program that took the pair's slave as its terminal. Output
 * still in the PTY when the program exits is delivered before the exit; a
 * background process keeping the slave open gets at most {@link DRAIN_MS}.
 */
export function attachPty(master: number, child: Deno.ChildProcess): Pty {
  const socket = new tty.ReadStream(master);
  const l = lib();
  /** The master is ours to write to (false from the moment the socket may close it). */
  let open = true;
  const input = masterInput(master, () => open);
  const destroy = () => {
    open = false;
    socket.destroy();
  };
  const dataListeners: ((bytes: Uint8Array) => void)[] = [];
  const exitListeners: ((exit: { code: number | null; signal: string | null }) => void)[] = [];
  let exited = false;
  let closed = false;
  let resolveClosed!: () => void;
  const socketClosed = new Promise<void>((r) => resolveClosed = r);
  // Output before the first listener (the caller may await something first) is kept for it.
  let pending: Uint8Array[] | null = [];
  const emit = (bytes: Uint8Array) => {
    if (pending) pending.push(bytes);
    else for (const l of dataListeners) l(bytes);
  };
  socket.on("data", (d: Uint8Array) => emit(d));
  socket.on("error", (err: Error & { code?: string }) => {
    // EIO: the last holder of the slave closed it. Anything else also ends reading.
    if (err.code === "EAGAIN") return;
    destroy();
  });
  socket.on("close", () => {
    open = false;
    closed = true;
    resolveClosed();
  });
  // What the entry printed before it took the terminal (a failure to enter the vault).
  const early = (async () => {
    try {
      for await (const chunk of child.stderr) emit(chunk);
    } catch {
      // cancelled on exit
    }
  })();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const finished = child.status.then(async (status) => {
    exited = true;
    const drained = Promise.all([socketClosed, early]);
    await Promise.race([drained, new Promise((r) => timer = setTimeout(r, DRAIN_MS))]);
    clearTimeout(timer);
    if (!closed) destroy();
    await child.stderr.cancel().catch(() => {});
    await Promise.race([socketClosed, new Promise((r) => timer = setTimeout(r, DRAIN_MS))]);
    clearTimeout(timer);
    return status.signal
      ? { code: null, signal: status.signal as string }
      : { code: status.code, signal: null };
  });
  return {
    pid: child.pid,
    write(bytes) {
      if (!open || !bytes.length) return;
      if (input) input(bytes);
      else socket.write(bytes);
    },
    resize(cols, rows) {
      if (!open) return;
      l.ioctl(master, TIOCSWINSZ, winsize(cols, rows));
    },
    pause: () => socket.pause(),
    resume: () => socket.resume(),
    kill(signal = "SIGHUP") {
      if (exited) return;
      try {
        child.kill(signal as Deno.Signal);
      } catch {
        // already gone
      }
    },
    onData(listener) {
      dataListeners.push(listener);
      const held = pending;
      pending = null;
      for (const bytes of held ?? []) listener(bytes);
    },
    onExit(listener) {
      exitListeners.push(listener);
      if (exitListeners.length === 1) {
        finished.then((exit) => {
          for (const l of exitListeners) l(exit);
        });
      }
    },
  };
}

/**
 * Spawns `argv` in the rootfs's vault on a PTY of the vault's own devpts
 * (see the module doc), working directory `cwd`, exactly `env` for the
 * program. Falls back to {@link spawnPty} with the sandbox's PTY command in
 * the laptop's `userns` mode or when the rootfs has no devpts of its own.
 */
export async function spawnPtyInRootfs(
  rootfs: string,
  argv: string[],
  cwd: string,
  env: Record<string, string>,
  opts: { cols: number; rows: number; term: string },
): Promise<Pty> {
  if (await detectSandbox() === "root") {
    const ns = await ensureNamespace(rootfs);
    const pair = openVaultPty(rootfs, opts.cols, opts.rows);
    if (pair) {
      let child: Deno.ChildProcess;
      try {
        child = ns.spawnOnPty(pair.index, argv, cwd, env);
      } catch (err) {
        lib().close(pair.master);
        throw err;
      }
      try {
        return attachPty(pair.master, child);
      } catch (err) {
        lib().close(pair.master);
        child.kill("SIGKILL");
        throw err;
      }
    }
  }
  const cmd = await ptyCommandInRootfs(rootfs, argv, cwd, env);
  return spawnPty(cmd.argv, { ...opts, env: cmd.env, signalTarget: cmd.signalTarget });
}
