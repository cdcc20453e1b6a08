/**
 * `exec` streams without a PTY: argv runs in the rootfs's vault namespace, stdin
 * streamed in, stdout and stderr kept apart as data channels 2 and 3, and
 * the exit code or signal reported last, after all output.
 *
 * @module
 */
import {
  type ExecRequest,
  type FrameReader,
  type FrameWriter,
  SessionInput,
} from "../protocol/mod.ts";
import { sandboxEnv, spawnInRootfs } from "./sandbox.ts";
import { log } from "./log.ts";

async function pump(
  source: ReadableStream<Uint8Array>,
  writer: FrameWriter,
  channel: 2 | 3,
): Promise<void> {
  try {
    for await (const chunk of source) await writer.data(channel, chunk);
  } catch {
    // The client went away; the process is told by the input side.
  }
}

/** Runs one non-TTY exec request to completion. */
export async function serveExec(
  req: ExecRequest,
  reader: FrameReader,
  writer: FrameWriter,
  ctx: { rootfsDir: string },
): Promise<void> {
  let child: Deno.ChildProcess;
  try {
    child = await spawnInRootfs(ctx.rootfsDir, req.argv, req.cwd ?? "/root", {
      env: sandboxEnv(req.env),
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    });
  } catch (err) {
    await writer.send({
      type: "error",
      code: "exec.spawn",
      message: `cannot start ${req.argv[0]}: ${(err as Error).message}`,
    });
    return;
  }
  await writer.send({ type: "started", pid: child.pid });
  const stdin = child.stdin.getWriter();
  let exited = false;
  const input = (async () => {
    try {
      while (true) {
        const frame = await reader.next();
        if (frame === null) break;
        if (frame.kind === "data") {
          if (frame.channel === 1) await stdin.write(frame.bytes).catch(() => {});
          continue;
        }
        const msg = SessionInput.parse(frame.message);
        if (msg.type === "eof") await stdin.close().catch(() => {});
        else if (msg.type === "signal") child.kill(msg.signal as Deno.Signal);
      }
    } catch {
      // Stream reset: the client is gone. Like sshd, hang up on the command.
      if (!exited) {
        try {
          child.kill("SIGHUP");
        } catch { /* already gone */ }
      }
    }
    await stdin.close().catch(() => {});
  })();
  const output = Promise.all([
    pump(child.stdout, writer, 2),
    pump(child.stderr, writer, 3),
  ]);
  const status = await child.status;
  exited = true;
  await output;
  await writer.send({
    type: "exit",
    code: status.signal ? null : status.code,
    signal: status.signal ?? null,
  }).catch(() => {});
  await writer.close();
  log("exec.exit", { argv0: req.argv[0], code: status.code, signal: status.signal });
  await reader.cancel().catch(() => {});
  await input;
}
