/**
 * A real terminal for tests: bash on a PTY that a test types into and whose
 * screen bytes it reads, waiting on what appears (never on time).
 *
 * @module
 */
import { spawnPty } from "../src/console/pty.ts";

const decoder = new TextDecoder();

/** A terminal we type into and read the screen bytes of. */
export function outerTerminal(env: Record<string, string> = {}) {
  const pty = spawnPty(["/bin/bash", "--norc", "--noprofile"], {
    cols: 100,
    rows: 30,
    term: "xterm",
    env: {
      PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
      TERM: "xterm",
      HOME: Deno.env.get("HOME") ?? "/root",
      PS1: "outer$ ",
      NO_COLOR: "1",
      ...env,
    },
  });
  let screen = "";
  let waiters: (() => void)[] = [];
  pty.onData((b) => {
    screen += decoder.decode(b, { stream: true });
    for (const w of waiters) w();
  });
  let mark = 0;
  return {
    pty,
    type: (s: string) => pty.write(new TextEncoder().encode(s)),
    /** Moves the read position to the end: later waits only see newer output. */
    mark() {
      mark = screen.length;
    },
    since: () => screen.slice(mark),
    /** Waits until the output since the mark matches, then marks past the match. */
    waitFor(re: RegExp, ms = 20_000): Promise<string> {
      return new Promise((resolve, reject) => {
        const check = () => {
          const m = re.exec(screen.slice(mark));
          if (!m) return false;
          const text = screen.slice(mark, mark + m.index + m[0].length);
          mark += m.index + m[0].length;
          waiters = waiters.filter((w) => w !== check);
          clearTimeout(timer);
          resolve(text);
          return true;
        };
        const timer = setTimeout(() => {
          waiters = waiters.filter((w) => w !== check);
          reject(
            new Error(
              `timed out waiting for ${re}; screen tail: ${JSON.stringify(screen.slice(-1500))}`,
            ),
          );
        }, ms);
        if (!check()) waiters.push(check);
      });
    },
  };
}
