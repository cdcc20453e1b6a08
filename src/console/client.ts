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
import { type LocalTerminal, processTerminal, terminalInput, withRawTerminal } from "./terminal.ts";

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
  /** The vault's name, for status lines (default "the vault"). */
  name?: string;
  /**
   * Starts dialing spare connections beside the current one, on a short
   * fixed schedule (see the client's reconnect.ts). While the path is silent
   * the console moves to the first that connects. Without it, a silent path
   * is only reported, and left to QUIC's idle timeout and {@link reopen}.
   */
  spares?: (onFailure: (why: string) => void) => SpareRace;
  /** Heartbeat timing in ms (default 500 / 2000): ping interval, silence that is reported. */
  heartbeat?: { intervalMs: number; silenceMs: number };
  /** This console's port forwards: `~#` lists them, `~C` then `-L SPEC` adds one. */
  forwards?: ConsoleForwards;
}

/** The port forwards a console can show and add to. */
export interface ConsoleForwards {
  /** One line per forward, e.g. `-L 8080:localhost:8080 (127.0.0.1:8080, 0 open)`. */
  list(): string[];
  /** Starts forwarding `spec` (LPORT:HOST:RPORT or BIND:LPORT:HOST:RPORT); throws when it cannot. */
  add(spec: string): Promise<void>;
}

const COMMAND_HELP = [
  "Commands:",
  "      -L[bind_address:]port:host:hostport    Request local forward",
].join("\r\n") + "\r\n";

/** A fresh connection the console may move to. */
export interface Spare {
  open: OpenStream;
  /** The console moved here: make it the connection everyone uses (retiring the old one). */
  adopt(): void;
  /** Not needed after all. */
  discard(): Promise<void>;
}

/** Spares being dialed until one connects; `won` rejects when retrying cannot help. */
export interface SpareRace {
  won: Promise<Spare>;
  stop(): void;
}

/** How a console ended. */
export interface ConsoleResult {
  session: string;
  /** The shell's exit (null when the user detached with `~.`). */
  exit: { code: number | null; signal: string | null } | null;
}

const encoder = new TextEncoder();
const MAX_PENDING_INPUT = 64 * 1024;
/** Keyboard bytes kept until init acknowledges them, to re-send after a switch. */
const MAX_UNACKED_INPUT = 64 * 1024;
const HEARTBEAT = { intervalMs: 500, silenceMs: 2000 };
/** Ping interval while the path is silent (a few dozen bytes each). */
const SILENT_PING_MS = 100;

class Lost extends Error {}
/** The path went silent and a spare connection answered first: re-attach there. */
class Switch extends Error {
  constructor(readonly to: Spare) {
    super("moved to a new connection");
  }
}

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
  const stdin = opts.stdin ?? terminalInput();
  const out = (opts.stdout ?? Deno.stdout.writable).getWriter();
  const term = opts.term ?? Deno.env.get("TERM") ?? "xterm-256color";
  const status = opts.onStatus ??
    ((line: string) => void out.write(encoder.encode(`\r\n[fly-vault] ${line}\x1b[K\r\n`)));
  const backoff = opts.backoffMs ?? { initial: 250, max: 8000 };
  const hb = opts.heartbeat ?? HEARTBEAT;
  const vaultName = opts.name ?? "the vault";

  let link = null as Link | null;
  let pending: Uint8Array[] = [];
  let pendingBytes = 0;
  let detachRequested = false;
  let wakeDetach!: () => void;
  const detachSignal = new Promise<void>((r) => wakeDetach = r);

  const parser = createEscapeParser();
  const stdinReader = stdin.getReader();
  const type = (bytes: Uint8Array) => {
    if (link) link.send(bytes);
    else if (pendingBytes + bytes.length <= MAX_PENDING_INPUT) {
      pending.push(bytes);
      pendingBytes += bytes.length;
    }
  };
  /** The `~C` command line being typed, or null. */
  let commandLine: number[] | null = null;
  const say = (text: string) => out.write(encoder.encode(text));
  // Edits the ~C line with what was typed; returns the bytes after its end (for the shell).
  const editCommand = async (bytes: Uint8Array): Promise<Uint8Array> => {
    for (let i = 0; i < bytes.length; i++) {
      const b = bytes[i];
      if (b === 0x0d || b === 0x0a || b === 0x03 || b === 0x1b) {
        const line = new TextDecoder().decode(Uint8Array.from(commandLine!)).trim();
        commandLine = null;
        await say("\r\n");
        if (b === 0x0d || b === 0x0a) await runCommand(line);
        return bytes.subarray(i + 1);
      }
      if (b === 0x7f || b === 0x08) {
        if (commandLine!.length) {
          commandLine!.pop();
          await say("\b \b");
        }
      } else if (b >= 0x20 && commandLine!.length < 256) {
        commandLine!.push(b);
        await out.write(Uint8Array.of(b));
      }
    }
    return new Uint8Array(0);
  };
  const runCommand = async (line: string) => {
    if (line === "") return;
    const m = /^-L\s*(\S+)$/.exec(line);
    if (!m) {
      await say(
        line === "?" || line === "help"
          ? COMMAND_HELP
          : `unknown command: ${line}\r\n${COMMAND_HELP}`,
      );
      return;
    }
    if (!opts.forwards) return void await say("this console cannot add forwards\r\n");
    try {
      await opts.forwards.add(m[1]);
      await say(`Forwarding ${m[1]}\r\n`);
    } catch (err) {
      const e = err as Error & { hint?: string };
      await say(`cannot forward ${m[1]}: ${e.message}${e.hint ? ` (${e.hint})` : ""}\r\n`);
    }
  };
  const listForwards = async () => {
    const lines = opts.forwards?.list() ?? [];
    await say(
      lines.length
        ? `~#\r\nForwarded ports:\r\n${lines.map((l) => `  ${l}\r\n`).join("")}`
        : "~#\r\nNo forwarded ports (~C then -L port:host:hostport adds one).\r\n",
    );
  };
  // ~^Z as in ssh: give the terminal back, stop, and on `fg` take it again and redraw.
  const suspend = async () => {
    if (!terminal.isTerminal()) return void await say("~^Z (not a terminal: not suspended)\r\n");
    await say("~^Z [suspend fly-vault]\r\n");
    let onCont = () => {};
    const resumed = new Promise<void>((r) => onCont = r);
    Deno.addSignalListener("SIGCONT", onCont);
    terminal.setRaw(false);
    try {
      Deno.kill(Deno.pid, "SIGTSTP");
      await resumed;
    } finally {
      Deno.removeSignalListener("SIGCONT", onCont);
      terminal.setRaw(true);
    }
    // The size may have changed while stopped; a size change also makes the program redraw.
    const { cols, rows } = size();
    link?.resize(cols, Math.max(1, rows - 1));
    link?.resize(cols, rows);
  };
  const keyboard = (async () => {
    try {
      while (!detachRequested) {
        const { value, done } = await stdinReader.read();
        if (done) break;
        for (const ev of parser.feed(value)) {
          if (ev.type === "data") {
            const rest = commandLine !== null ? await editCommand(ev.bytes) : ev.bytes;
            if (rest.length) type(rest);
          } else if (ev.type === "help") {
            await out.write(encoder.encode(`~?\r\n${ESCAPE_HELP}`));
          } else if (ev.type === "list-forwards") {
            await listForwards();
          } else if (ev.type === "command") {
            commandLine = [];
            await say("\r\nfly-vault> ");
          } else if (ev.type === "suspend") {
            await suspend();
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
  // Keyboard bytes sent but not yet acknowledged by init, at absolute session input offsets.
  let unacked: { at: number; bytes: Uint8Array }[] = [];
  let unackedBytes = 0;
  /** Session input offset after the last byte sent; null when init does not count input. */
  let sentTo: number | null = null;
  let race = null as SpareRace | null;
  try {
    while (true) {
      try {
        const exit = await attachOnce();
        return { session: session!, exit };
      } catch (err) {
        if (err instanceof Switch) {
          if (detachRequested) {
            await err.to.discard().catch(() => {});
            return { session: session!, exit: null };
          }
          err.to.adopt();
          open = err.to.open;
          reattaching = true;
          continue;
        }
        if (!(err instanceof Lost) || detachRequested) {
          if (detachRequested && session) return { session, exit: null };
          throw err;
        }
        if (race) {
          // Already dialing spares since the path went silent: the first that connects wins.
          status(`connection lost (${err.message}); still trying…`);
          const spare = await Promise.race([race.won, detachSignal.then(() => null)]);
          race = null;
          if (!spare) return { session: session!, exit: null };
          spare.adopt();
          open = spare.open;
          reattaching = true;
          continue;
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
    race?.stop();
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

  /**
   * One attachment; resolves with the exit, throws {@link Lost} when the stream breaks
   * and {@link Switch} when a spare connection answered while this path was silent.
   */
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
    if (reply.type !== "attached") {
      throw new VaultError("protocol.unexpected", `console reply '${reply.type}' before attached`);
    }
    session = reply.session;
    if (reattaching) {
      const gap = offset !== undefined && (reply.offset ?? 0) > offset;
      status(`reconnected to session ${session}${gap ? " (some output was lost)" : ""}`);
    }
    let shown = reply.offset ?? 0;
    offset = shown;
    // What the old path swallowed: keystrokes sent after the last byte init counted.
    const resend = inputToResend(reply.input);

    let broken = false;
    let ended = false;
    let switchTo: Spare | null = null;
    const detachTimers: ReturnType<typeof setTimeout>[] = [];
    const fail = () => {
      broken = true;
      reader.cancel().catch(() => {});
    };
    let lastHeard = performance.now();
    let silent = false;
    link = {
      send(bytes) {
        writer.data(1, bytes).catch(fail);
        if (sentTo === null) return;
        unacked.push({ at: sentTo, bytes });
        sentTo += bytes.length;
        unackedBytes += bytes.length;
        while (unackedBytes > MAX_UNACKED_INPUT) unackedBytes -= unacked.shift()!.bytes.length;
      },
      resize(c, r) {
        writer.send({ type: "resize", cols: c, rows: r }).catch(fail);
      },
      detach() {
        // Wait (briefly) for the server to end the stream: it has then seen the detach, and
        // `sessions` will not list this session as attached after the process exits.
        // Not on a silent path: nothing would come back.
        writer.send({ type: "eof" }).catch(() => {});
        writer.close().catch(() => {});
        const timer = setTimeout(() => reader.cancel().catch(() => {}), silent ? 0 : 2000);
        detachTimers.push(timer);
      },
    };
    for (const bytes of resend) link.send(bytes);
    // Keystrokes typed while reconnecting, and a resize that may have happened meanwhile.
    const queued = pending;
    pending = [];
    pendingBytes = 0;
    for (const bytes of queued) link.send(bytes);
    if (reattaching) link.resize(cols, rows);
    if (detachRequested) link.detach();

    // Heartbeat: init answers every ping; a path silent for `silenceMs` is reported at
    // once and, while it stays silent, spare connections are dialed to move to.
    let seq = 0;
    let watchdog: ReturnType<typeof setTimeout> | undefined;
    const check = () => {
      const left = hb.silenceMs - (performance.now() - lastHeard);
      if (left <= 0) onSilence();
      // Due before the next ping: look again right then, not up to a ping later.
      else if (left < hb.intervalMs) watchdog = setTimeout(check, left);
    };
    let beat: ReturnType<typeof setTimeout> | undefined;
    const pulse = () => {
      clearTimeout(watchdog);
      if (!silent) check();
      writer.send({ type: "ping", seq: seq++ }).catch(fail);
      // While silent, probe often: the first ping through after the path returns ends the wait.
      beat = setTimeout(pulse, silent ? SILENT_PING_MS : hb.intervalMs);
    };
    if (reply.heartbeat) beat = setTimeout(pulse, hb.intervalMs);
    const onSilence = () => {
      silent = true;
      const secs = Math.round(hb.silenceMs / 100) / 10;
      status(`no reply from ${vaultName} for ${secs}s — waiting (~. to quit)`);
      if (!opts.spares || detachRequested) return;
      let lastWhy = "";
      race ??= opts.spares((why) => {
        if (why !== lastWhy) status(`reconnecting: ${lastWhy = why}`);
      });
      race.won.then((spare) => {
        // Ended by a lost stream: the outer loop takes the spare while `race` is still set.
        if (ended && race) return;
        if (ended || !silent) return void spare.discard().catch(() => {});
        race = null;
        switchTo = spare;
        reader.cancel().catch(() => {});
      }, (err) => {
        if (!ended) status(`cannot reconnect: ${(err as Error).message}`);
      });
    };
    const heard = () => {
      lastHeard = performance.now();
      if (!silent) return;
      silent = false;
      race?.stop();
      race = null;
      status(`${vaultName} answers again`);
    };

    try {
      while (true) {
        const frame = await reader.next();
        if (switchTo) throw new Switch(switchTo);
        if (frame === null) {
          if (detachRequested) return null;
          throw new Lost("the vault closed the console stream");
        }
        heard();
        if (frame.kind === "data") {
          if (frame.channel === 2 || frame.channel === 3) {
            shown += frame.bytes.length;
            offset = shown;
            await out.write(frame.bytes);
          }
          continue;
        }
        const msg = ConsoleReply.parse(frame.message);
        if (msg.type === "pong") {
          acknowledge(msg.input);
          continue;
        }
        if (msg.type === "exit") {
          writer.close().catch(() => {});
          return { code: msg.code, signal: msg.signal };
        }
        if (msg.type === "error") throw new VaultError(msg.code, msg.message, msg.hint ?? "");
      }
    } catch (err) {
      if (switchTo) throw new Switch(switchTo);
      if (err instanceof VaultError && !broken && !err.code.startsWith("protocol.")) throw err;
      if (detachRequested) return null;
      throw new Lost(broken ? "write failed" : (err as Error).message);
    } finally {
      ended = true;
      clearTimeout(beat);
      clearTimeout(watchdog);
      link = null;
      detachTimers.forEach(clearTimeout);
    }
  }

  /** Init has counted `input` keyboard bytes: they need not be re-sent. */
  function acknowledge(input: number) {
    while (unacked.length && unacked[0].at + unacked[0].bytes.length <= input) {
      unackedBytes -= unacked.shift()!.bytes.length;
    }
  }

  /**
   * On (re-)attach, init says how many keyboard bytes the session has
   * received: what we sent beyond that was lost with the old path. When the
   * count is outside what we hold (another client typed, or too much was
   * lost), nothing is re-sent rather than guessed.
   */
  function inputToResend(input: number | undefined): Uint8Array[] {
    const held = unacked;
    const to = sentTo;
    unacked = [];
    unackedBytes = 0;
    sentTo = input ?? null;
    if (input === undefined || to === null || held.length === 0) return [];
    if (input < held[0].at || input > to) return [];
    return held.filter((u) => u.at + u.bytes.length > input)
      .map((u) => u.bytes.subarray(Math.max(0, input - u.at)));
  }
}
