/**
 * A thin byte-oriented wrapper over node-pty for init: bytes in, bytes out,
 * flow control, resize, exit with a signal name. Everything else in this
 * folder is written against {@link Pty} so tests and the server share it.
 *
 * @module
 */
import pty from "node-pty";
import { constants } from "node:os";

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
  const socket = (p as unknown as { _socket: { write(b: Uint8Array): boolean } })._socket;
  let exited = false;
  return {
    pid: p.pid,
    write(bytes) {
      if (!exited && bytes.length) socket.write(bytes);
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
