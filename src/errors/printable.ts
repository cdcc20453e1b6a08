/**
 * Text that reached us from a peer, an archive or a file we did not write
 * must never drive the user's terminal: an escape sequence in a tar entry
 * name or a server's error message could clear the screen, fake lines that
 * look like ours, set the window title, or write to the clipboard (OSC 52).
 * {@link printable} makes such text inert before it is printed.
 *
 * @module
 */

/** Options for {@link printable}. */
export interface PrintableOptions {
  /** Keep `\n` (for multi-line text); otherwise it is escaped like any control. */
  multiline?: boolean;
  /** Cut to this many characters (an ellipsis marks the cut). Default 1000. */
  maxLength?: number;
}

// C0 controls (but tab), DEL, C1 controls, and the bidirectional overrides and
// isolates that can make text read differently from what it is ("trojan source").
// Matching control characters is this module's whole purpose.
// deno-lint-ignore no-control-regex
const UNSAFE = /[\x00-\x08\x0a-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;
// deno-lint-ignore no-control-regex
const UNSAFE_KEEP_NL = /[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

function escapeChar(ch: string): string {
  const code = ch.codePointAt(0)!;
  return code <= 0xff ? `\\x${code.toString(16).padStart(2, "0")}` : `\\u{${code.toString(16)}}`;
}

/**
 * Returns `text` with every control character (C0 but tab, DEL, C1) and every
 * bidirectional control shown as a visible escape (`\x1b`, `\u{202e}`), so
 * it prints as the characters it holds and nothing more. Long text is cut.
 */
export function printable(text: string, opts: PrintableOptions = {}): string {
  const max = opts.maxLength ?? 1000;
  const cut = text.length > max ? text.slice(0, max) + "…" : text;
  return cut.replace(opts.multiline ? UNSAFE_KEEP_NL : UNSAFE, escapeChar);
}
