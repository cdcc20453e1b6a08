/**
 * The console and `exec -t` clients in-process, with a scripted terminal,
 * against the real init-side handlers (PTYs chrooted in a small rootfs).
 */
import assert from "node:assert/strict";
import { isVaultError } from "../src/errors/mod.ts";
import {
  createInteractiveHandlers,
  type LocalTerminal,
  runConsole,
  runExecTty,
} from "../src/console/mod.ts";
import { ExecRequest, StreamTag } from "../src/protocol/mod.ts";
import { startLoopbackServer } from "./console_loopback.ts";
import { buildTestRootfs } from "./console_rootfs.ts";

function scriptedTerminal(cols = 90, rows = 33) {
  const raw: boolean[] = [];
  const listeners = new Set<() => void>();
  let size = { cols, rows };
  const term: LocalTerminal = {
    isTerminal: () => true,
    setRaw: (r) => void raw.push(r),
    size: () => size,
    onResize(l) {
      listeners.add(l);
      return () => listeners.delete(l);
    },
  };
  return {
    term,
    raw,
    resize(c: number, r: number) {
      size = { cols: c, rows: r };
      for (const l of listeners) l();
    },
  };
}

function keyboard() {
  let ctl!: ReadableStreamDefaultController<Uint8Array>;
  const stream = new ReadableStream<Uint8Array>({ start: (c) => void (ctl = c) });
  return { stream, type: (s: string) => ctl.enqueue(new TextEncoder().encode(s)) };
}

function screen() {
  let text = "";
  let waiters: (() => void)[] = [];
  const stream = new WritableStream<Uint8Array>({
    write(chunk) {
      text += new TextDecoder().decode(chunk);
      for (const w of waiters) w();
    },
  });
  return {
    stream,
    get text() {
      return text;
    },
    waitFor(re: RegExp, ms = 15_000): Promise<void> {
      return new Promise((resolve, reject) => {
        const check = () => {
          if (!re.test(text)) return false;
          clearTimeout(timer);
          waiters = waiters.filter((w) => w !== check);
          resolve();
          return true;
        };
        const timer = setTimeout(
          () =>
            reject(new Error(`timed out waiting for ${re} in ${JSON.stringify(text.slice(-500))}`)),
          ms,
        );
        if (!check()) waiters.push(check);
      });
    },
  };
}

async function setup() {
  const rootfs = await buildTestRootfs();
  const bundle = createInteractiveHandlers();
  const ctx = { store: { rootfsDir: rootfs } };
  const server = startLoopbackServer(async (tag, reader, writer) => {
    if (tag === StreamTag.console) return await bundle.handlers.console(reader, writer, ctx);
    if (tag === StreamTag.exec) {
      const execRequest = await reader.message(ExecRequest, "exec");
      return await bundle.handlers.execTty(reader, writer, { ...ctx, execRequest });
    }
  });
  return {
    rootfs,
    bundle,
    server,
    async cleanup() {
      await bundle.closeAll();
      await server.close();
      await Deno.remove(rootfs, { recursive: true }).catch(() => {});
    },
  };
}

const opts = { sanitizeOps: false, sanitizeResources: false };

Deno.test({
  ...opts,
  name: "exec -t: a PTY of the local size, input, output, resize and the exit code; raw restored",
  async fn() {
    const env = await setup();
    try {
      const t = scriptedTerminal(91, 27);
      const kb = keyboard();
      const out = screen();
      const running = runExecTty(
        env.server.openStream,
        {
          argv: [
            "/bin/bash",
            "-c",
            "stty size; [ -t 0 ] && echo is-a-tty; read x; stty size; echo got-$x; exit 7",
          ],
        },
        { terminal: t.term, stdin: kb.stream, stdout: out.stream, term: "xterm" },
      );
      running.catch(() => {}); // awaited below; keeps a timeout above from hiding the cause
      await out.waitFor(/27 91\r\nis-a-tty\r\n/);
      t.resize(100, 40);
      kb.type("hello\r");
      await out.waitFor(/got-hello/);
      assert.deepEqual(await running, { code: 7, signal: null });
      assert.match(out.text, /40 100\r\n/);
      assert.deepEqual(t.raw, [true, false]);
    } finally {
      await env.cleanup();
    }
  },
});

Deno.test({
  ...opts,
  name: "console: a second client takes the session over; the first is told and restored",
  async fn() {
    const env = await setup();
    try {
      const a = { t: scriptedTerminal(), kb: keyboard(), out: screen() };
      const first = runConsole(env.server.openStream, {
        terminal: a.t.term,
        stdin: a.kb.stream,
        stdout: a.out.stream,
        term: "xterm",
      }).then((r) => r, (e) => e);
      await a.out.waitFor(/fv# $/);
      a.kb.type("echo one-$((1+1))\r");
      await a.out.waitFor(/one-2/);
      const [info] = env.bundle.sessions();
      assert.equal(info.attached, true);
      assert.equal(info.command, "/bin/bash -l");

      const b = { t: scriptedTerminal(), kb: keyboard(), out: screen() };
      const second = runConsole(env.server.openStream, {
        session: info.id,
        terminal: b.t.term,
        stdin: b.kb.stream,
        stdout: b.out.stream,
        term: "xterm",
      });
      const err = await first;
      assert.ok(isVaultError(err, "console.taken_over"), String(err));
      assert.deepEqual(a.t.raw, [true, false]);
      // The newcomer gets the earlier output repainted, then works.
      await b.out.waitFor(/one-2/);
      b.kb.type("exit\r");
      const result = await second;
      assert.equal(result.session, info.id);
      assert.deepEqual(result.exit, { code: 0, signal: null });
      assert.deepEqual(b.t.raw, [true, false]);
      assert.equal(env.bundle.sessions().length, 0);
    } finally {
      await env.cleanup();
    }
  },
});

Deno.test({
  ...opts,
  name: "console: a lost stream without reopen ends clearly, the session lives on, raw restored",
  async fn() {
    const env = await setup();
    try {
      const a = { t: scriptedTerminal(), kb: keyboard(), out: screen() };
      const run = runConsole(env.server.openStream, {
        terminal: a.t.term,
        stdin: a.kb.stream,
        stdout: a.out.stream,
      }).then((r) => r, (e) => e);
      await a.out.waitFor(/fv# $/);
      env.server.dropAll();
      const err = await run;
      assert.ok(isVaultError(err, "console.lost"), String(err));
      assert.match(err.hint, /fly-vault connect --session [0-9a-f]{8}/);
      assert.deepEqual(a.t.raw, [true, false]);
      const [info] = env.bundle.sessions();
      assert.equal(info.attached, false);
      // Unknown session ids are refused with a hint.
      const b = { t: scriptedTerminal(), kb: keyboard(), out: screen() };
      await assert.rejects(
        runConsole(env.server.openStream, {
          session: "deadbeef",
          terminal: b.t.term,
          stdin: b.kb.stream,
          stdout: b.out.stream,
        }),
        (e: unknown) => isVaultError(e, "console.no_session"),
      );
    } finally {
      await env.cleanup();
    }
  },
});

Deno.test({
  ...opts,
  name: "console: ~? prints help, ~. detaches; OSC 52 passes through untouched",
  async fn() {
    const env = await setup();
    try {
      const a = { t: scriptedTerminal(), kb: keyboard(), out: screen() };
      const run = runConsole(env.server.openStream, {
        session: "new",
        terminal: a.t.term,
        stdin: a.kb.stream,
        stdout: a.out.stream,
      });
      await a.out.waitFor(/fv# $/);
      a.kb.type("printf '\\033]52;c;aGVsbG8=\\a'\r");
      await a.out.waitFor(new RegExp(String.raw`\x1b\]52;c;aGVsbG8=\x07`));
      a.kb.type("~?");
      await a.out.waitFor(/Supported escape sequences/);
      a.kb.type("~.");
      const result = await run;
      assert.equal(result.exit, null);
      assert.equal(env.bundle.sessions().length, 1);
    } finally {
      await env.cleanup();
    }
  },
});

Deno.test({
  ...opts,
  name: "console: closeAll hangs up every shell, and kills one that ignores SIGHUP",
  async fn() {
    const env = await setup();
    try {
      const a = { t: scriptedTerminal(), kb: keyboard(), out: screen() };
      const run = runConsole(env.server.openStream, {
        terminal: a.t.term,
        stdin: a.kb.stream,
        stdout: a.out.stream,
      });
      await a.out.waitFor(/fv# $/);
      a.kb.type("trap '' HUP; echo trapped\r");
      await a.out.waitFor(/[\r\n]trapped\r\n/);
      await a.out.waitFor(/fv# $/);
      await env.bundle.closeAll();
      assert.equal(env.bundle.sessions().length, 0);
      assert.deepEqual((await run).exit, { code: null, signal: "SIGKILL" });
    } finally {
      await env.cleanup();
    }
  },
});

Deno.test({
  ...opts,
  name: "console: a session that ended while disconnected is reported clearly on reconnect",
  async fn() {
    const env = await setup();
    try {
      const a = { t: scriptedTerminal(), kb: keyboard(), out: screen() };
      let reopened!: () => void;
      const lost = new Promise<void>((r) => reopened = r);
      let release!: () => void;
      const gate = new Promise<void>((r) => release = r);
      const run = runConsole(env.server.openStream, {
        terminal: a.t.term,
        stdin: a.kb.stream,
        stdout: a.out.stream,
        onStatus: () => {},
        backoffMs: { initial: 10, max: 10 },
        reopen: async () => {
          reopened();
          await gate; // the shell exits while we are away
          return env.server.openStream;
        },
      }).then((r) => r, (e) => e);
      await a.out.waitFor(/fv# $/);
      env.server.dropAll();
      await lost;
      await env.bundle.closeAll();
      release();
      const err = await run;
      assert.ok(isVaultError(err, "console.session_gone"), String(err));
      assert.match(err.message, /ended while we were disconnected/);
      assert.deepEqual(a.t.raw, [true, false]);
    } finally {
      await env.cleanup();
    }
  },
});
