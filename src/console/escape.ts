/**
 * ssh-style escape sequences typed by the user: after a newline (or at the
 * very start), `~.` disconnects, `~?` prints help, `~#` lists forwards,
 * `~C` opens a command line (`-L …` adds a forward), `~^Z` suspends the
 * client, `~~` sends one `~`. Any
 * other byte after `~` sends both. A pure state machine over bytes so it can
 * be tested without a terminal; everything that is not an escape passes
 * through byte for byte (OSC 52 and friends included).
 *
 * @module
 */

/** What the parser found in one chunk of keyboard input, in order. */
export type EscapeEvent =
  | { type: "data"; bytes: Uint8Array }
  | { type: "disconnect" }
  | { type: "help" }
  | { type: "list-forwards" }
  | { type: "command" }
  | { type: "suspend" };

/** Help text for `~?`, with CRLF line ends because the terminal is raw. */
export const ESCAPE_HELP = [
  "Supported escape sequences:",
  " ~.   - disconnect (the session keeps running; reconnect re-attaches)",
  " ~#   - list forwarded connections",
  " ~C   - open a command line (-L [bind:]port:host:hostport adds a forward)",
  " ~^Z  - suspend fly-vault (fg brings it back)",
  " ~?   - this message",
  " ~~   - send the escape character by typing it twice",
  "(Note that escapes are only recognized immediately after newline.)",
].join("\r\n") + "\r\n";

const TILDE = 0x7e;
const CR = 0x0d;
const LF = 0x0a;

/** A stateful escape parser; `feed` each chunk of raw keyboard input. */
export interface EscapeParser {
  feed(chunk: Uint8Array): EscapeEvent[];
}

/** Creates a parser in the "at line start" state (like ssh: `~.` works as the first input). */
export function createEscapeParser(escapeChar = TILDE): EscapeParser {
  let atLineStart = true;
  let pendingEscape = false;
  return {
    feed(chunk) {
      const events: EscapeEvent[] = [];
      let out: number[] = [];
      const flush = () => {
        if (out.length) events.push({ type: "data", bytes: Uint8Array.from(out) });
        out = [];
      };
      for (const b of chunk) {
        if (pendingEscape) {
          pendingEscape = false;
          if (b === 0x2e /* . */) {
            flush();
            events.push({ type: "disconnect" });
            atLineStart = false;
            continue;
          }
          const local = ({ 0x23: "list-forwards", 0x43: "command", 0x1a: "suspend" } as const)[
            b as 0x23 | 0x43 | 0x1a
          ];
          if (local) {
            flush();
            events.push({ type: local });
            // As after ~?: the next line starts here, so another escape may follow.
            atLineStart = true;
            continue;
          }
          if (b === 0x3f /* ? */) {
            flush();
            events.push({ type: "help" });
            // ssh stays at line start after help, so `~.` can follow.
            atLineStart = true;
            continue;
          }
          if (b === escapeChar) {
            out.push(escapeChar);
            atLineStart = false;
            continue;
          }
          out.push(escapeChar, b);
          atLineStart = b === CR || b === LF;
          continue;
        }
        if (atLineStart && b === escapeChar) {
          pendingEscape = true;
          continue;
        }
        out.push(b);
        atLineStart = b === CR || b === LF;
      }
      flush();
      return events;
    },
  };
}
