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
import { closeFd, InRootError, openInRoot, readFileInRoot } from "../rootfs/mod.ts";
import { sandboxEnv, spawnInRootfs } from "./sandbox.ts";
import { log } from "./log.ts";
import { execIds } from "./exec_ids.ts";

/**
 * The vault user's login shell, as the vault sees it: root's shell in the
 * rootfs's /etc/passwd when that file names one the rootfs has, else /bin/sh.
 * Never a host path.
 */
export async function vaultLoginShell(rootfsDir: string): Promise<string> {
  try {
    const passwd = await readFileInRoot(rootfsDir, "/etc/passwd", 1 << 20);
    const line = passwd && new TextDecoder().decode(passwd).split("\n")
      .find((l) => l.startsWith("root:"));
    const shell = line?.split(":")[6]?.trim();
    if (shell && shell.startsWith("/")) {
      closeFd(openInRoot(rootfsDir, shell, { pathOnly: true }));
      return shell;
    }
  } catch {
    // No passwd, no such shell, or a link init does not follow: the fallback.
  }
  return "/bin/sh";
}

/** What init runs for `req`, or the error the client sees (in the vault's paths). */
export type PreparedExec =
  | { ok: true; argv: string[]; cwd: string; env: Record<string, string> }
  | { ok: false; code: string; message: string; hint: string };

/**
 * Resolves an exec request against the rootfs: `shell` requests become
 * `LOGIN_SHELL -c COMMAND` (with SHELL set to it, as sshd does), and a working
 * directory the vault does not have is refused here, by its vault path.
 */
export async function prepareExec(req: ExecRequest, rootfsDir: string): Promise<PreparedExec> {
  const cwd = req.cwd ?? "/root";
  if (req.cwd !== undefined) {
    const problem = missingDirectory(rootfsDir, cwd);
    if (problem) {
      return {
        ok: false,
        code: "exec.no_cwd",
        message: `${cwd.slice(0, 1024)}: ${problem} in the vault`,
        hint: "-C names a directory inside the vault (default /root)",
      };
    }
  }
  if (!req.shell) return { ok: true, argv: req.argv, cwd, env: req.env };
  const shell = await vaultLoginShell(rootfsDir);
  return {
    ok: true,
    argv: [shell, "-c", req.argv.join(" ")],
    cwd,
    env: { SHELL: shell, ...req.env },
  };
}

/** Why `dir` is no directory inside the rootfs, or null when it is one (or cannot be told). */
function missingDirectory(rootfsDir: string, dir: string): string | null {
  let fd: number;
  try {
    fd = openInRoot(rootfsDir, dir, { pathOnly: true });
  } catch (err) {
    return err instanceof InRootError && err.notFound ? "no such directory" : null;
  }
  try {
    return Deno.statSync(`/proc/self/fd/${fd}`).isDirectory ? null : "not a directory";
  } catch {
    return null;
  } finally {
    closeFd(fd);
  }
}

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
  if (req.id !== undefined && !execIds.claim(req.id)) {
    // The same command again: its first try reached us (through the master) and ran or runs.
    log("exec.duplicate", { argv0: req.argv[0] });
    await writer.send({
      type: "error",
      code: "exec.duplicate",
      message: "this command already reached the vault once (through the master) and was not " +
        "run again",
      hint: "its output went to the master's connection, which stopped answering; check " +
        "whether it took effect before running it again",
    });
    await writer.close().catch(() => {});
    return;
  }
  const run = await prepareExec(req, ctx.rootfsDir);
  if (!run.ok) {
    await writer.send({ type: "error", code: run.code, message: run.message, hint: run.hint });
    await writer.close().catch(() => {});
    return;
  }
  let child: Deno.ChildProcess;
  try {
    child = await spawnInRootfs(ctx.rootfsDir, run.argv, run.cwd, {
      env: sandboxEnv(run.env),
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    });
  } catch (err) {
    await writer.send({
      type: "error",
      code: "exec.spawn",
      // The machine's reason would name host paths (the rootfs, the entry program).
      message: `cannot start the command in the vault`,
      hint: "see the machine's log (exec.spawn_failed) for the reason",
    });
    log("exec.spawn_failed", { argv0: req.argv[0], error: (err as Error).message });
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
