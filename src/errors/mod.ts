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
  err = networkError(err) ?? err;
  if (err instanceof VaultError) {
    return `error[${printable(err.code)}]: ${printable(err.message)}` +
      (err.hint ? `\nhint: ${printable(err.hint)}` : "");
  }
  const message = err instanceof Error ? err.message : String(err);
  return `error[internal]: ${
    printable(message)
  }\nhint: this is a bug in fly-vault; please report it with the command you ran`;
}

const LOST_HINT =
  "the network path to the vault failed (Wi-Fi change, sleep, VPN/WireGuard down) or the machine restarted; run the command again (a console reconnects by itself)";

/**
 * The network's own failures, as the OS and QUIC report them (a dead path,
 * the peer gone, an idle timeout), as {@link VaultError}s with a code and a
 * hint of their own: they are not fly-vault's bugs. Null for anything else.
 */
export function networkError(err: unknown): VaultError | null {
  if (!(err instanceof Error) || err instanceof VaultError) return null;
  const text = err.message;
  const errs = Deno.errors;
  const lost = (why: string) =>
    new VaultError("transport.lost", `connection to the vault lost (${why})`, LOST_HINT, {
      cause: err,
    });
  // QUIC's idle timeout (no packet from the vault for the whole idle time).
  if (err instanceof errs.TimedOut || /^(connection )?timed out$/i.test(text)) {
    return new VaultError(
      "transport.timeout",
      "the vault stopped answering (timed out)",
      "check your network and VPN/WireGuard, and that the machine is started (fly-vault status VAULT)",
      { cause: err },
    );
  }
  if (
    err instanceof errs.ConnectionRefused || err instanceof errs.AddrNotAvailable ||
    /\b(network|host) is unreachable|no route to host/i.test(text)
  ) {
    return new VaultError("transport.unreachable", `cannot reach the vault (${text})`, LOST_HINT, {
      cause: err,
    });
  }
  if (
    err instanceof errs.NotConnected || err instanceof errs.ConnectionReset ||
    err instanceof errs.ConnectionAborted || err instanceof errs.BrokenPipe ||
    (err instanceof errs.BadResource && /resource was closed/.test(text))
  ) return lost(text);
  // quinn's words for a connection or stream that ended under us.
  if (
    /^(connection lost|reset by peer|closed by peer(: .*)?|closed by peer application(: .*)?|stream reset by peer(: .*)?|sending stopped by peer(: .*)?)$/i
      .test(text)
  ) return lost(text);
  return null;
}
