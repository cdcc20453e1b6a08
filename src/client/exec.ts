/**
 * `fly-vault exec`: one command in the vault, stdin streamed up, stdout and
 * stderr kept apart, and the remote exit status as ours (128+N when the
 * command was killed by signal N, as shells report it).
 *
 * @module
 */
import { constants } from "node:os";
import { VaultError } from "../errors/mod.ts";
import {
  type ByteStream,
  type ExecRequest,
  FrameReader,
  FrameWriter,
  SessionOutput,
} from "../protocol/mod.ts";
import { mark } from "./timing.ts";

/** Exit status for a remote exit: its code, or 128 + signal number. */
export function exitStatusOf(code: number | null, signal: string | null): number {
  if (signal) {
    const n = (constants.signals as Record<string, number>)[signal];
    return 128 + (n ?? 0);
  }
  return code ?? 255;
}

/**
 * The error an init reported for an exec request. A shell request (`shell`)
 * refused as a bad message comes from an init older than shell exec (its
 * request schema is strict): said as such, with the two ways out.
 */
export function execError(
  msg: { code: string; message: string; hint?: string },
  shell: boolean | undefined,
): VaultError {
  if (shell && msg.code === "protocol.bad_message" && msg.message.includes("shell")) {
    return new VaultError(
      "exec.shell_unsupported",
      "this vault's init predates running commands through the login shell",
      "run it as argv with fly-vault exec --argv VAULT -- PROGRAM ARGS…, or update the " +
        "machine's image (fly-vault-admin tenant update-image)",
    );
  }
  return new VaultError(msg.code, msg.message, msg.hint ?? "");
}

/** Where exec's bytes come from and go to. */
export interface ExecIo {
  stdin?: ReadableStream<Uint8Array>;
  stdout: WritableStream<Uint8Array>;
  stderr: WritableStream<Uint8Array>;
}

/** Runs `req` on an exec stream; resolves to the exit status. */
export async function runExec(
  stream: ByteStream,
  req: Omit<ExecRequest, "type">,
  io: ExecIo,
  signals?: { subscribe(forward: (signal: string) => void): () => void },
  opts: { requestSent?: boolean } = {},
): Promise<number> {
  const reader = new FrameReader(stream.readable);
  const writer = new FrameWriter(stream.writable);
  // Through a master that takes it without a proof of life first: an id init runs once.
  // A client restarted after such a try failed (master.ts, runFastExec) sends the same id,
  // whatever its stream.
  const again = Deno.env.get("FLY_VAULT_EXEC_ID");
  const id = req.tty ? undefined : (stream as { execId?: () => string | undefined }).execId?.() ??
    (/^[0-9a-f]{32}$/.test(again ?? "") ? again : undefined);
  mark("client.exec_sent");
  // The fast path (master_fast.ts) sent the request before this module was loaded.
  if (!opts.requestSent) await writer.send({ type: "exec", ...req, ...(id ? { id } : {}) });
  const first = await reader.message(SessionOutput, "exec start");
  mark("client.exec_started");
  if (first.type === "error") throw execError(first, req.shell);
  const unsubscribe = signals?.subscribe((signal) => {
    writer.send({ type: "signal", signal }).catch(() => {});
  });
  let done = false;
  const upload = (async () => {
    if (!io.stdin) return void await writer.send({ type: "eof" }).catch(() => {});
    const input = io.stdin.getReader();
    try {
      while (!done) {
        const { value, done: end } = await input.read();
        if (end) break;
        await writer.data(1, value);
      }
      await writer.send({ type: "eof" });
    } catch {
      // The remote side finished or went away; nothing more to send.
    } finally {
      input.releaseLock();
    }
  })();
  const out = io.stdout.getWriter();
  const err = io.stderr.getWriter();
  try {
    while (true) {
      const frame = await reader.next();
      if (frame === null) {
        throw new VaultError(
          "exec.lost",
          "the connection ended before the command reported its exit status",
          "the machine may have restarted; run the command again",
        );
      }
      if (frame.kind === "data") {
        await (frame.channel === 3 ? err : out).write(frame.bytes);
        continue;
      }
      const msg = SessionOutput.parse(frame.message);
      if (msg.type === "exit") {
        mark("client.exec_exit");
        return exitStatusOf(msg.code, msg.signal);
      }
      if (msg.type === "error") throw new VaultError(msg.code, msg.message, msg.hint ?? "");
    }
  } finally {
    done = true;
    unsubscribe?.();
    out.releaseLock();
    err.releaseLock();
    await writer.close();
    void upload;
  }
}

/**
 * The terminal's signals as exec forwards them: the first Ctrl-C (or TERM/HUP)
 * goes to the remote command; a second one leaves.
 */
export function forwardedSignals(): { subscribe(forward: (signal: string) => void): () => void } {
  return {
    subscribe(forward) {
      const listeners: Array<() => void> = [];
      const seen = new Set<string>();
      for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
        const handler = () => {
          if (seen.has(sig)) Deno.exit(128 + ({ SIGINT: 2, SIGTERM: 15, SIGHUP: 1 })[sig]);
          seen.add(sig);
          forward(sig);
        };
        Deno.addSignalListener(sig, handler);
        listeners.push(() => Deno.removeSignalListener(sig, handler));
      }
      return () => listeners.forEach((off) => off());
    },
  };
}
