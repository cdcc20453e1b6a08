/**
 * Client side of the console: attach to a session in init, relay the
 * keyboard (through the escape parser) and the window size, show output,
 * and survive a lost connection by reopening with backoff and re-attaching
 * to the same session from the last byte shown.
 *
 * @module
 */
import { VaultError } from "../errors/mod.ts";
import {
  type ByteStream,
  ConsoleReply,
  FrameReader,
  FrameWriter,
  StreamTag,
} from "../protocol/mod.ts";
import { createEscapeParser, ESCAPE_HELP } from "./escape.ts";
import { type LocalTerminal, processTerminal, withRawTerminal } from "./terminal.ts";

/** Opens a stream of kind `tag` on the current connection (tag byte already written). */
export type OpenStream = (tag: StreamTag) => Promise<ByteStream>;

/** Options for {@link runConsole}. */
export interface ConsoleOptions {
  /** Session id to attach to, `"new"` for a new one; absent = the most recent, else new. */
  session?: string;
  /** Keyboard bytes (default: Deno.stdin). */
  stdin?: ReadableStream<Uint8Array>;
  /** Where output goes (default: Deno.stdout). */
  stdout?: WritableStream<Uint8Array>;
  /** The local terminal (default: the process's own). */
  terminal?: LocalTerminal;
  /** TERM for the remote shell (default: local TERM or xterm-256color). */
  term?: string;
  /**
   * Called after the stream is lost: returns a fresh {@link OpenStream}
   * (reconnecting, re-pinning or re-attesting). Without it a lost stream ends
   * the console with `console.lost`.
   */
  reopen?: () => Promise<OpenStream>;
  /** Reconnect backoff: first delay and cap in ms (default 250 / 8000). */
  backoffMs?: { initial: number; max: number };
  /** Status lines (connection lost, reconnected); default: written to stdout on their own line. */
  onStatus?: (line: string) => void;
}

/** How a console ended. */
export interface ConsoleResult {
  session: string;
  /** The shell's exit (null when the user detached with `~.`). */
  exit: { code: number | null; signal: string | null } | null;
}

const encoder = new TextEncoder();
const MAX_PENDING_INPUT = 64 * 1024;

class Lost extends Error {}

/** Where keystrokes go right now: the attached stream, or a bounded buffer while reconnecting. */
interface Link {
  send(bytes: Uint8Array): void;
  resize(cols: number, rows: number): void;
  detach(): void;
}

/**
 * Runs an interactive console until the shell exits or the user types `~.`.
 * The local terminal is raw for the duration and restored on every way out.
 */
export async function runConsole(
  openStream: OpenStream,
  opts: ConsoleOptions = {},
): Promise<ConsoleResult> {
  const terminal = opts.terminal ?? processTerminal();
  return await withRawTerminal(terminal, () => consoleLoop(openStream, opts, terminal));
}

async function consoleLoop(
  openStream: OpenStream,
  opts: ConsoleOptions,
  terminal: LocalTerminal,
): Promise<ConsoleResult> {
  const stdin = opts.stdin ?? Deno.stdin.readable;
  const out = (opts.stdout ?? Deno.stdout.writable).getWriter();
  const term = opts.term ?? Deno.env.get("TERM") ?? "xterm-256color";
  const status = opts.onStatus ??
    ((line: string) => void out.write(encoder.encode(`\r\n[fly-vault] ${line}\x1b[K\r\n`)));
  const backoff = opts.backoffMs ?? { initial: 250, max: 8000 };

  let link = null as Link | null;
  let pending: Uint8Array[] = [];
  let pendingBytes = 0;
  let detachRequested = false;
  let wakeDetach!: () => void;
  const detachSignal = new Promise<void>((r) => wakeDetach = r);

  const parser = createEscapeParser();
  const stdinReader = stdin.getReader();
  const keyboard = (async () => {
    try {
      while (!detachRequested) {
        const { value, done } = await stdinReader.read();
        if (done) break;
        for (const ev of parser.feed(value)) {
          if (ev.type === "data") {
            if (link) link.send(ev.bytes);
            else if (pendingBytes + ev.bytes.length <= MAX_PENDING_INPUT) {
              pending.push(ev.bytes);
              pendingBytes += ev.bytes.length;
            }
          } else if (ev.type === "help") {
            await out.write(encoder.encode(`~?\r\n${ESCAPE_HELP}`));
          } else {
            await out.write(encoder.encode("~.\r\n"));
            detachRequested = true;
            link?.detach();
            wakeDetach();
            break;
          }
        }
      }
    } catch {
      // stdin closed under us: nothing more to type
    }
  })();

  const size = () => terminal.size() ?? { cols: 80, rows: 24 };
  const unwatch = terminal.onResize(() => {
    const { cols, rows } = size();
    link?.resize(cols, rows);
  });

  let session = opts.session;
  let offset: number | undefined;
  let open = openStream;
  let reattaching = false;
  try {
    while (true) {
      try {
        const exit = await attachOnce();
        return { session: session!, exit };
      } catch (err) {
        if (!(err instanceof Lost) || detachRequested) {
          if (detachRequested && session) return { session, exit: null };
          throw err;
        }
        if (!opts.reopen) {
          throw new VaultError(
            "console.lost",
            `connection to the vault was lost (${err.message})`,
            session ? `reconnect with: fly-vault connect --session ${session}` : "",
          );
        }
        status(`connection lost (${err.message}); reconnecting…`);
        open = await reconnect(opts.reopen, err.message);
        if (detachRequested) return { session: session!, exit: null };
        reattaching = true;
      }
    }
  } finally {
    unwatch();
    detachRequested = true;
    await stdinReader.cancel().catch(() => {});
    stdinReader.releaseLock();
    await keyboard;
    await out.releaseLock();
  }

  async function reconnect(reopen: () => Promise<OpenStream>, why: string): Promise<OpenStream> {
    let delay = backoff.initial;
    for (let attempt = 1;; attempt++) {
      await Promise.race([new Promise((r) => setTimeout(r, delay)), detachSignal]);
      if (detachRequested) return open;
      try {
        const next = await Promise.race([reopen(), detachSignal.then(() => null)]);
        if (next) return next;
        return open;
      } catch (err) {
        why = (err as Error).message;
        if (err instanceof VaultError && !err.code.startsWith("transport.")) {
          // Not a network problem (e.g. the vault's identity changed): retrying will not help.
          if (err.code.startsWith("attest.") || err.code.startsWith("auth.")) throw err;
        }
        status(`reconnect attempt ${attempt} failed (${why}); retrying in ${delay / 1000}s`);
      }
      delay = Math.min(delay * 2, backoff.max);
    }
  }

  /** One attachment; resolves with the exit, throws {@link Lost} when the stream breaks. */
  async function attachOnce(): Promise<ConsoleResult["exit"]> {
    let stream: ByteStream;
    try {
      stream = await open(StreamTag.console);
    } catch (err) {
      throw new Lost((err as Error).message);
    }
    const writer = new FrameWriter(stream.writable);
    const reader = new FrameReader(stream.readable);
    const { cols, rows } = size();
    let reply;
    try {
      await writer.send({ type: "console", session, term, cols, rows, env: {}, offset });
      reply = await reader.message(ConsoleReply, "console reply");
    } catch (err) {
      if (err instanceof VaultError && err.code === "protocol.bad_message") throw err;
      throw new Lost((err as Error).message);
    }
    if (reply.type === "error") {
      if (reattaching && reply.code === "console.no_session") {
        throw new VaultError(
          "console.session_gone",
          `session ${session} ended while we were disconnected (its shell exited, or the machine restarted)`,
          "run `fly-vault connect` again to start a new session",
        );
      }
      throw new VaultError(reply.code, reply.message, reply.hint ?? "");
    }
    if (reply.type === "exit") return { code: reply.code, signal: reply.signal };
    session = reply.session;
    if (reattaching) {
      const gap = offset !== undefined && (reply.offset ?? 0) > offset;
      status(`reconnected to session ${session}${gap ? " (some output was lost)" : ""}`);
    }
    offset = reply.offset ?? 0;

    let broken = false;
    const detachTimers: ReturnType<typeof setTimeout>[] = [];
    const fail = () => {
      broken = true;
      reader.cancel().catch(() => {});
    };
    link = {
      send(bytes) {
        writer.data(1, bytes).catch(fail);
      },
      resize(c, r) {
        writer.send({ type: "resize", cols: c, rows: r }).catch(fail);
      },
      detach() {
        // Wait (briefly) for the server to end the stream: it has then seen the detach, and
        // `sessions` will not list this session as attached after the process exits.
        writer.send({ type: "eof" }).catch(() => {});
        writer.close().catch(() => {});
        const timer = setTimeout(() => reader.cancel().catch(() => {}), 2000);
        detachTimers.push(timer);
      },
    };
    // Keystrokes typed while reconnecting, and a resize that may have happened meanwhile.
    const queued = pending;
    pending = [];
    pendingBytes = 0;
    for (const bytes of queued) link.send(bytes);
    if (reattaching) link.resize(cols, rows);
    if (detachRequested) link.detach();

    try {
      while (true) {
        const frame = await reader.next();
        if (frame === null) {
          if (detachRequested) return null;
          throw new Lost("the vault closed the console stream");
        }
        if (frame.kind === "data") {
          if (frame.channel === 2 || frame.channel === 3) {
            offset += frame.bytes.length;
            await out.write(frame.bytes);
          }
          continue;
        }
        const msg = ConsoleReply.parse(frame.message);
        if (msg.type === "exit") {
          writer.close().catch(() => {});
          return { code: msg.code, signal: msg.signal };
        }
        if (msg.type === "error") throw new VaultError(msg.code, msg.message, msg.hint ?? "");
      }
    } catch (err) {
      if (err instanceof VaultError && !broken && !err.code.startsWith("protocol.")) throw err;
      if (detachRequested) return null;
      throw new Lost(broken ? "write failed" : (err as Error).message);
    } finally {
      link = null;
      detachTimers.forEach(clearTimeout);
    }
  }
}
