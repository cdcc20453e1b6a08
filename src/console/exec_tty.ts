/**
 * Client side of `exec -t` (like `ssh -t`): the command runs on a PTY in the
 * vault; the local terminal is raw for the duration, the window size
 * follows, `~.` disconnects, and the command's exit status comes back.
 *
 * @module
 */
import { VaultError } from "../errors/mod.ts";
import { FrameReader, FrameWriter, SessionOutput, StreamTag } from "../protocol/mod.ts";
import type { OpenStream } from "./client.ts";
import { createEscapeParser, ESCAPE_HELP } from "./escape.ts";
import { type LocalTerminal, processTerminal, terminalInput, withRawTerminal } from "./terminal.ts";
import { execError } from "../client/exec.ts";

/** What to run. */
export interface ExecTtyRequest {
  argv: string[];
  /** Run `argv[0]` with the vault user's login shell (see ExecRequest.shell). */
  shell?: boolean;
  env?: Record<string, string>;
  cwd?: string;
}

/** Options for {@link runExecTty}. */
export interface ExecTtyOptions {
  stdin?: ReadableStream<Uint8Array>;
  stdout?: WritableStream<Uint8Array>;
  terminal?: LocalTerminal;
  term?: string;
}

const encoder = new TextEncoder();

/**
 * Runs one command on a remote PTY. Resolves with its exit (`code` null and
 * `signal` set when killed by a signal; both null after `~.`).
 */
export async function runExecTty(
  openStream: OpenStream,
  req: ExecTtyRequest,
  opts: ExecTtyOptions = {},
): Promise<{ code: number | null; signal: string | null }> {
  const terminal = opts.terminal ?? processTerminal();
  return await withRawTerminal(terminal, async () => {
    const stream = await openStream(StreamTag.exec);
    const writer = new FrameWriter(stream.writable);
    const reader = new FrameReader(stream.readable);
    const size = terminal.size() ?? { cols: 80, rows: 24 };
    await writer.send({
      type: "exec",
      argv: req.argv,
      ...(req.shell ? { shell: true as const } : {}),
      env: req.env ?? {},
      ...(req.cwd ? { cwd: req.cwd } : {}),
      tty: true,
      term: opts.term ?? Deno.env.get("TERM") ?? "xterm-256color",
      cols: size.cols,
      rows: size.rows,
    });
    const out = (opts.stdout ?? Deno.stdout.writable).getWriter();
    const stdinReader = (opts.stdin ?? terminalInput()).getReader();
    let detached = false;
    const parser = createEscapeParser();
    const keyboard = (async () => {
      try {
        while (!detached) {
          const { value, done } = await stdinReader.read();
          if (done) {
            await writer.send({ type: "eof" });
            break;
          }
          for (const ev of parser.feed(value)) {
            if (ev.type === "data") await writer.data(1, ev.bytes);
            else if (ev.type === "help") await out.write(encoder.encode(`~?\r\n${ESCAPE_HELP}`));
            else {
              detached = true;
              await out.write(encoder.encode("~.\r\n"));
              await reader.cancel();
              await writer.abort();
              break;
            }
          }
        }
      } catch {
        // the stream or stdin went away
      }
    })();
    const unwatch = terminal.onResize(() => {
      const s = terminal.size();
      if (s) writer.send({ type: "resize", cols: s.cols, rows: s.rows }).catch(() => {});
    });
    try {
      while (true) {
        let frame;
        try {
          frame = await reader.next();
        } catch (err) {
          if (detached) return { code: null, signal: null };
          throw new VaultError("exec.lost", `connection lost: ${(err as Error).message}`, "");
        }
        if (frame === null) {
          if (detached) return { code: null, signal: null };
          throw new VaultError("exec.lost", "the stream ended before the exit status", "");
        }
        if (frame.kind === "data") {
          await out.write(frame.bytes);
          continue;
        }
        const msg = SessionOutput.parse(frame.message);
        if (msg.type === "exit") return { code: msg.code, signal: msg.signal };
        if (msg.type === "error") throw execError(msg, req.shell);
      }
    } finally {
      unwatch();
      detached = true;
      await stdinReader.cancel().catch(() => {});
      stdinReader.releaseLock();
      await keyboard;
      await writer.close();
      out.releaseLock();
    }
  });
}
