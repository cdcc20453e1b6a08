/**
 * Typed errors shared by every program.
 *
 * Every failure a user can meet is a {@link VaultError} with a stable `code`
 * (scripts match on it; it never changes once released), a one-line
 * `message`, and a `hint` that says what to do next. The CLI prints
 * `error[code]: message` and `hint: …`, and nothing else.
 *
 * @module
 */
import { printable } from "./printable.ts";

export { printable, type PrintableOptions } from "./printable.ts";

/** A failure with a stable machine-readable code and a hint for people. */
export class VaultError extends Error {
  override name = "VaultError";
  /** Stable identifier, e.g. `attest.bad_signature`. */
  readonly code: string;
  /** What the user can do about it; empty when nothing. */
  readonly hint: string;

  constructor(code: string, message: string, hint = "", options?: ErrorOptions) {
    super(message, options);
    this.code = code;
    this.hint = hint;
  }
}

/** True when `err` is a {@link VaultError}, optionally with a code prefix. */
export function isVaultError(err: unknown, codePrefix?: string): err is VaultError {
  return err instanceof VaultError && (codePrefix === undefined || err.code.startsWith(codePrefix));
}

/**
 * Renders an error as the two lines the CLIs print. Unknown errors keep their
 * message. Messages often carry text from elsewhere (a path in an archive, a
 * server's words, an OS error), so every part goes through {@link printable}:
 * nothing in an error can drive the terminal.
 */
export function formatError(err: unknown): string {
  if (err instanceof VaultError) {
    return `error[${printable(err.code)}]: ${printable(err.message)}` +
      (err.hint ? `\nhint: ${printable(err.hint)}` : "");
  }
  const message = err instanceof Error ? err.message : String(err);
  return `error[internal]: ${
    printable(message)
  }\nhint: this is a bug in fly-vault; please report it with the command you ran`;
}
