/**
 * Init side of the console: login shells on PTYs in the rootfs's vault namespace,
 * living in init beyond any one connection. A client attaches (new, by id,
 * or the most recent), gets the output it missed from a bounded replay
 * buffer, and detaches by going away; the session ends when its shell exits.
 *
 * One client is attached at a time: a new attach takes the session over
 * (the old stream is told and closed), because after a network change the
 * old connection is usually a dead one that has not timed out yet.
 *
 * @module
 */
import {
  ConsoleAttach,
  ConsoleInput,
  encodeData,
  type ExecRequest,
  type FrameReader,
  type FrameWriter,
  type SessionInfo,
  SessionInput,
} from "../protocol/mod.ts";
import { sandboxEnv } from "../init/sandbox.ts";
import { prepareExec } from "../init/exec.ts";
import { log } from "../init/log.ts";
import { inVaultPaths } from "../init/vault_paths.ts";
import { closeFd, openInRoot } from "../rootfs/inroot.ts";
import { type Pty, spawnPtyInRootfs } from "./pty.ts";

/** Bounded record of a session's most recent output, addressed by absolute offset. */
export class ReplayRing {
  #chunks: Uint8Array[] = [];
  #size = 0;
  /** Absolute offset just past the last byte ever written. */
  end = 0;
  constructor(readonly capacity: number) {}

  /** Absolute offset of the oldest byte still held. */
  get start(): number {
    return this.end - this.#size;
  }

  push(bytes: Uint8Array): void {
    this.end += bytes.length;
    if (bytes.length >= this.capacity) {
      this.#chunks = [bytes.slice(bytes.length - this.capacity)];
      this.#size = this.capacity;
      return;
    }
    this.#chunks.push(bytes.slice());
    this.#size += bytes.length;
    while (this.#size > this.capacity) {
      const over = this.#size - this.capacity;
      const first = this.#chunks[0];
      if (first.length <= over) {
        this.#chunks.shift();
        this.#size -= first.length;
      } else {
        this.#chunks[0] = first.subarray(over);
        this.#size -= over;
      }
    }
  }

  /** Bytes from absolute `offset` (clamped to what is held) to the end, and where they start. */
  since(offset: number): { from: number; bytes: Uint8Array } {
    let from = Math.min(Math.max(offset, this.start), this.end);
    const all = new Uint8Array(this.#size);
    let off = 0;
    for (const c of this.#chunks) (all.set(c, off), off += c.length);
    let bytes = all.subarray(from - this.start);
    // Starting mid-line (the ring wrapped) risks starting inside an escape sequence; skip to a newline.
    if (from > offset && this.start > 0) {
      const nl = bytes.indexOf(0x0a);
      if (nl >= 0) {
        bytes = bytes.subarray(nl + 1);
        from += nl + 1;
      }
    }
    return { from, bytes };
  }
}

const HIGH_WATER = 32; // data frames in flight before the PTY is paused
const LOW_WATER = 8;

/**
 * Sends PTY output to one stream with flow control: the PTY is paused while
 * too many frames are in flight, so a slow client slows the program instead
 * of growing memory.
 */
function outputSink(writer: FrameWriter, pty: Pty, onFail: () => void) {
  let inFlight = 0;
  let paused = false;
  let failed = false;
  return {
    send(bytes: Uint8Array) {
      if (failed || bytes.length === 0) return;
      inFlight++;
      if (inFlight >= HIGH_WATER && !paused) {
        paused = true;
        pty.pause();
      }
      // Written synchronously into the writer's queue, so order is kept.
      writer.writer.write(encodeData(2, bytes)).then(() => {
        inFlight--;
        if (paused && inFlight <= LOW_WATER) {
          paused = false;
          pty.resume();
        }
      }, () => {
        if (!failed) {
          failed = true;
          onFail();
        }
      });
    },
    /** Lets the PTY run again (on detach). */
    release() {
      failed = true;
      if (paused) {
        paused = false;
        pty.resume();
      }
    },
  };
}

interface Attachment {
  writer: FrameWriter;
  sink: ReturnType<typeof outputSink>;
  /** Ends this attachment: `message` is sent first when given. */
  end(message?: unknown): void;
}

/** One console session. */
interface Session {
  id: string;
  started: Date;
  command: string;
  lastActivity: number;
  /** Keyboard bytes received over the session's life (acknowledged to the client in pongs). */
  inputBytes: number;
  pty: Pty;
  ring: ReplayRing;
  attachment: Attachment | null;
  exited: boolean;
  exitedPromise: Promise<void>;
}

/** The live console sessions of one init process. */
export interface ConsoleSessions {
  /** id, started, idle, command, attached for `fly-vault sessions`. */
  list(): SessionInfo[];
  /**
   * Hangs up every session (init shutdown, before a rootfs swap, tests) and
   * resolves once their shells are gone: SIGHUP, then SIGKILL after `graceMs`.
   */
  closeAll(graceMs?: number): Promise<void>;
  /** Internal: used by {@link serveConsole}. */
  readonly _map: Map<string, Session>;
  readonly _replayBytes: number;
  readonly _maxSessions: number;
}

/** Creates the session table. `replayBytes` bounds each session's replay buffer. */
export function createConsoleSessions(
  opts: { replayBytes?: number; maxSessions?: number } = {},
): ConsoleSessions {
  const map = new Map<string, Session>();
  return {
    _map: map,
    _replayBytes: opts.replayBytes ?? 256 * 1024,
    _maxSessions: opts.maxSessions ?? 64,
    list() {
      const now = Date.now();
      return [...map.values()].map((s) => ({
        id: s.id,
        started: s.started.toISOString(),
        idle_seconds: Math.max(0, Math.round((now - s.lastActivity) / 1000)),
        command: s.command,
        attached: s.attachment !== null,
      }));
    },
    async closeAll(graceMs = 2000) {
      const live = [...map.values()];
      const gone = Promise.all(live.map((s) => s.exitedPromise));
      for (const s of live) s.pty.kill("SIGHUP");
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timedOut = await Promise.race([
        gone.then(() => false),
        new Promise<boolean>((r) => timer = setTimeout(() => r(true), graceMs)),
      ]);
      clearTimeout(timer);
      if (!timedOut) return;
      for (const s of live) s.pty.kill("SIGKILL");
      await Promise.race([gone, new Promise((r) => timer = setTimeout(r, 1000))]);
      clearTimeout(timer);
    },
  };
}

/** The first login shell the rootfs has, looked up as the vault sees it (never a host path). */
function loginShell(rootfsDir: string): string {
  for (const shell of ["/bin/bash", "/bin/sh"]) {
    try {
      closeFd(openInRoot(rootfsDir, shell, { pathOnly: true }));
      return shell;
    } catch {
      // try the next one
    }
  }
  return "/bin/sh";
}

function newId(map: Map<string, Session>): string {
  while (true) {
    const id = crypto.randomUUID().slice(0, 8);
    if (!map.has(id)) return id;
  }
}

async function createSession(
  sessions: ConsoleSessions,
  rootfsDir: string,
  req: ConsoleAttach,
): Promise<Session> {
  const shell = loginShell(rootfsDir);
  const pty = await spawnPtyInRootfs(
    rootfsDir,
    [shell, "-l"],
    "/root",
    sandboxEnv({ ...req.env, TERM: req.term, SHELL: shell, HOME: "/root" }),
    { cols: req.cols, rows: req.rows, term: req.term },
  );
  let markExited!: () => void;
  const session: Session = {
    exitedPromise: new Promise<void>((r) => markExited = r),
    id: newId(sessions._map),
    started: new Date(),
    command: `${shell} -l`,
    lastActivity: Date.now(),
    inputBytes: 0,
    pty,
    ring: new ReplayRing(sessions._replayBytes),
    attachment: null,
    exited: false,
  };
  pty.onData((bytes) => {
    session.lastActivity = Date.now();
    session.ring.push(bytes);
    session.attachment?.sink.send(bytes);
  });
  pty.onExit((exit) => {
    session.exited = true;
    sessions._map.delete(session.id);
    session.attachment?.end({ type: "exit", ...exit });
    session.attachment = null;
    markExited();
  });
  sessions._map.set(session.id, session);
  return session;
}

function latest(map: Map<string, Session>): Session | undefined {
  let best: Session | undefined;
  for (const s of map.values()) {
    if (!best || s.lastActivity > best.lastActivity) best = s;
  }
  return best;
}

/**
 * Serves one console stream (tag byte already consumed): reads the attach
 * request, attaches to (or creates) a session, then relays keyboard input
 * and resizes until the client detaches or the shell exits.
 */
export async function serveConsole(
  reader: FrameReader,
  writer: FrameWriter,
  ctx: { rootfsDir: string; sessions: ConsoleSessions },
): Promise<void> {
  const req = await reader.message(ConsoleAttach, "console request");
  const map = ctx.sessions._map;
  let session: Session | undefined;
  let created = false;
  if (req.session && req.session !== "new") {
    session = map.get(req.session);
    if (!session) {
      await writer.send({
        type: "error",
        code: "console.no_session",
        message: `no console session ${req.session} (it ended, or the machine restarted)`,
        hint: "run `fly-vault sessions` to list them, or connect without --session",
      });
      await writer.close();
      return;
    }
  } else if (req.session !== "new") {
    session = latest(map);
  }
  if (!session) {
    if (map.size >= ctx.sessions._maxSessions) {
      await writer.send({
        type: "error",
        code: "console.too_many",
        message: `${map.size} console sessions are open, the limit`,
        hint: "exit some shells (fly-vault sessions lists them)",
      });
      await writer.close();
      return;
    }
    try {
      session = await createSession(ctx.sessions, ctx.rootfsDir, req);
    } catch (err) {
      await writer.send({
        type: "error",
        code: "console.spawn",
        message: `cannot start a shell: ${inVaultPaths((err as Error).message)}`,
      });
      await writer.close();
      return;
    }
    created = true;
  }
  const s = session;
  s.attachment?.end({
    type: "error",
    code: "console.taken_over",
    message: `another client attached to session ${s.id}`,
  });

  let ended = false;
  let resolveEnded!: () => void;
  const endedPromise = new Promise<void>((r) => resolveEnded = r);
  const attachment: Attachment = {
    writer,
    sink: outputSink(writer, s.pty, () => attachment.end()),
    end(message) {
      if (ended) return;
      ended = true;
      attachment.sink.release();
      if (s.attachment === attachment) s.attachment = null;
      if (message) writer.send(message).catch(() => {});
      writer.close().catch(() => {});
      reader.cancel().catch(() => {});
      resolveEnded();
    },
  };
  // Attached, then the missed output, then live output: all queued synchronously, in order.
  const replay = created ? { from: 0, bytes: new Uint8Array(0) } : s.ring.since(req.offset ?? 0);
  writer.send({
    type: "attached",
    session: s.id,
    created,
    offset: replay.from,
    heartbeat: true,
    input: s.inputBytes,
  }).catch(() => {});
  attachment.sink.send(replay.bytes);
  s.attachment = attachment;
  if (!created) s.pty.resize(req.cols, req.rows);

  const input = (async () => {
    try {
      while (!ended) {
        const frame = await reader.next();
        // Taken over meanwhile: the new client re-sends what it knows we did not count.
        if (frame === null || ended) break;
        if (frame.kind === "data") {
          if (frame.channel === 1) {
            s.lastActivity = Date.now();
            s.inputBytes += frame.bytes.length;
            s.pty.write(frame.bytes);
          }
          continue;
        }
        const msg = ConsoleInput.parse(frame.message);
        if (msg.type === "resize") s.pty.resize(msg.cols, msg.rows);
        else if (msg.type === "signal") s.pty.kill(msg.signal);
        else if (msg.type === "ping") {
          // Behind any output already queued: the client hears the path, not just init.
          writer.send({ type: "pong", seq: msg.seq, input: s.inputBytes }).catch(() => {});
        } else if (msg.type === "eof") break; // the client detaches on purpose
      }
    } catch {
      // Stream reset or protocol error: detach; the session lives on.
    }
    attachment.end();
  })();
  await endedPromise;
  await input;
}

/**
 * Serves `exec -t`: runs `req.argv` in the vault on its own PTY (stdout and
 * stderr merged, as with `ssh -t`), relays input, resizes and signals, and
 * reports the exit status last. The caller has already read `req`.
 */
export async function serveExecTty(
  req: ExecRequest,
  reader: FrameReader,
  writer: FrameWriter,
  ctx: { rootfsDir: string },
): Promise<void> {
  const term = req.term ?? "xterm-256color";
  const run = await prepareExec(req, ctx.rootfsDir);
  if (!run.ok) {
    await writer.send({ type: "error", code: run.code, message: run.message, hint: run.hint })
      .catch(() => {});
    await writer.close();
    return;
  }
  let pty: Pty;
  try {
    pty = await spawnPtyInRootfs(
      ctx.rootfsDir,
      run.argv,
      run.cwd,
      sandboxEnv({ ...run.env, TERM: term }),
      { cols: req.cols ?? 80, rows: req.rows ?? 24, term },
    );
  } catch (err) {
    await writer.send({
      type: "error",
      code: "exec.spawn",
      // The machine's reason would name host paths (the rootfs, the entry program).
      message: "cannot start the command in the vault",
      hint: "see the machine's log (exec.spawn_failed) for the reason",
    }).catch(() => {});
    log("exec.spawn_failed", { argv0: req.argv[0], error: (err as Error).message });
    await writer.close();
    return;
  }
  const p = pty;
  await writer.send({ type: "started", pid: p.pid });
  const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) =>
    p.onExit(resolve)
  );
  let gone = false;
  const sink = outputSink(writer, p, () => {
    gone = true;
    p.kill("SIGHUP");
  });
  p.onData((bytes) => sink.send(bytes));
  const input = (async () => {
    try {
      while (true) {
        const frame = await reader.next();
        if (frame === null) break;
        if (frame.kind === "data") {
          if (frame.channel === 1) p.write(frame.bytes);
          continue;
        }
        const msg = SessionInput.parse(frame.message);
        if (msg.type === "resize") p.resize(msg.cols, msg.rows);
        else if (msg.type === "signal") p.kill(msg.signal);
        else if (msg.type === "eof") p.write(new Uint8Array([0x04])); // ^D: a PTY has no half-close
      }
    } catch {
      // The client is gone: hang up on the program, like sshd.
      gone = true;
      p.kill("SIGHUP");
    }
  })();
  const status = await exited;
  if (!gone) await writer.send({ type: "exit", ...status }).catch(() => {});
  await writer.close();
  await reader.cancel().catch(() => {});
  await input;
}
