/**
 * Keystroke latency guards for the console: nothing on a key's way (client
 * keyboard → init → PTY → shell echo → PTY → init → client screen) waits for
 * a timer, and the client reads the terminal in the event loop rather than
 * through a blocking read on a worker thread (a thread hand-off per key).
 */
import assert from "node:assert/strict";
import { createInteractiveHandlers, type LocalTerminal, runConsole } from "../src/console/mod.ts";
import { attachPty, openVaultPty, spawnPty } from "../src/console/pty.ts";
import { StreamTag } from "../src/protocol/mod.ts";
import { startLoopbackServer } from "./console_loopback.ts";
import { buildTestRootfs } from "./console_rootfs.ts";

const realSetTimeout = globalThis.setTimeout;
const realClearTimeout = globalThis.clearTimeout;

/** Resolves when `pred` holds after a change signalled through `onChange`; rejects at the deadline. */
function waitUntil(
  pred: () => boolean,
  onChange: (wake: () => void) => () => void,
  what: () => string,
  ms = 15_000,
): Promise<void> {
  return new Promise((resolve, reject) => {
    let off = () => {};
    const timer = realSetTimeout(() => {
      off();
      reject(new Error(what()));
    }, ms);
    const check = () => {
      if (!pred()) return;
      realClearTimeout(timer);
      off();
      resolve();
    };
    off = onChange(check);
    check();
  });
}

/**
 * Waits for the child on `pty` to say "ready", pastes `total` bytes (byte i = `byteAt(i)`) in 1 KiB
 * writes, waits for "done", and checks that `gotPath` holds exactly them.
 */
async function pasteWhole(
  pty: { onData(cb: (b: Uint8Array) => void): unknown; write(b: Uint8Array): unknown },
  gotPath: string,
  total: number,
  byteAt: (i: number) => number,
): Promise<void> {
  let text = "";
  const listeners = new Set<() => void>();
  pty.onData((b) => {
    text += new TextDecoder().decode(b);
    for (const l of listeners) l();
  });
  const onChange = (wake: () => void) => (listeners.add(wake), () => listeners.delete(wake));
  await waitUntil(() => text.includes("ready"), onChange, () => `child: ${text}`);
  const data = new Uint8Array(total);
  for (let i = 0; i < total; i++) data[i] = byteAt(i);
  for (let off = 0; off < total; off += 1024) pty.write(data.subarray(off, off + 1024));
  await waitUntil(() => text.includes("done"), onChange, () => `child: ${text}`, 30_000);
  const got = await Deno.readFile(gotPath);
  assert.equal(got.length, total);
  assert.ok(got.every((b, i) => b === data[i]), "bytes reordered or changed");
}

Deno.test({
  name: "console: a key's echo comes back with every timer frozen (no batching delay anywhere)",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const rootfs = await buildTestRootfs();
    const bundle = createInteractiveHandlers();
    const ctx = { store: { rootfsDir: rootfs } };
    const server = startLoopbackServer(async (tag, reader, writer) => {
      if (tag === StreamTag.console) await bundle.handlers.console(reader, writer, ctx);
    });
    let text = "";
    const listeners = new Set<() => void>();
    const screen = new WritableStream<Uint8Array>({
      write(chunk) {
        text += new TextDecoder().decode(chunk);
        for (const l of listeners) l();
      },
    });
    const onChange = (wake: () => void) => (listeners.add(wake), () => listeners.delete(wake));
    let ctl!: ReadableStreamDefaultController<Uint8Array>;
    const keys = new ReadableStream<Uint8Array>({ start: (c) => void (ctl = c) });
    const terminal: LocalTerminal = {
      isTerminal: () => true,
      setRaw: () => {},
      size: () => ({ cols: 80, rows: 24 }),
      onResize: () => () => {},
    };
    const frozen: unknown[] = [];
    try {
      const running = runConsole(server.openStream, {
        session: "new",
        stdin: keys,
        stdout: screen,
        terminal,
        term: "xterm",
        // No heartbeat during the test: its timer would be frozen too and is not on the key's path.
        heartbeat: { intervalMs: 3_600_000, silenceMs: 7_200_000 },
      });
      running.catch(() => {});
      ctl.enqueue(
        new TextEncoder().encode("PS1='ready> '; bind 'set enable-bracketed-paste off'\r"),
      );
      await waitUntil(
        () => /ready> $/.test(text),
        onChange,
        () => `no prompt: ${text.slice(-300)}`,
      );
      text = "";
      // From here on a timer callback never runs: an output or input batching delay
      // (setTimeout(0) included) would hold the echo back until the deadline.
      globalThis.setTimeout = ((fn: unknown, ...rest: unknown[]) => {
        frozen.push([fn, ...rest]);
        return 0;
      }) as unknown as typeof setTimeout;
      try {
        for (const key of ["q", "w", "e"]) {
          ctl.enqueue(new TextEncoder().encode(key));
          await waitUntil(
            () => text.endsWith(key),
            onChange,
            () =>
              `the echo of ${key} did not come with timers frozen (${frozen.length} timers waiting): ${
                JSON.stringify(text)
              }`,
          );
        }
      } finally {
        globalThis.setTimeout = realSetTimeout;
      }
      assert.equal(text, "qwe");
      ctl.enqueue(new TextEncoder().encode("\x15exit\r"));
      const result = await running;
      assert.deepEqual(result.exit, { code: 0, signal: null });
    } finally {
      globalThis.setTimeout = realSetTimeout;
      await bundle.closeAll();
      await server.close();
      await Deno.remove(rootfs, { recursive: true }).catch(() => {});
    }
  },
});

const O_NONBLOCK = 0o4000;

/** fd → [target, flags] of process `pid`. */
function fdTable(pid: number): Map<number, { target: string; flags: number }> {
  const out = new Map<number, { target: string; flags: number }>();
  for (const e of Deno.readDirSync(`/proc/${pid}/fd`)) {
    try {
      const target = Deno.readLinkSync(`/proc/${pid}/fd/${e.name}`);
      const info = Deno.readTextFileSync(`/proc/${pid}/fdinfo/${e.name}`);
      const flags = parseInt(/flags:\s*([0-7]+)/.exec(info)![1], 8);
      out.set(Number(e.name), { target, flags });
    } catch {
      // closed meanwhile
    }
  }
  return out;
}

Deno.test({
  name:
    "console: the keyboard is read non-blocking in the event loop; the shared stdin stays blocking",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const module = new URL("../src/console/terminal.ts", import.meta.url).href;
    const code = `
      import { terminalInput } from ${JSON.stringify(module)};
      Deno.stdin.setRaw(true);
      const reader = terminalInput().getReader();
      const next = reader.read();
      console.log("reading");
      const { value } = await next;
      console.log("got " + value[0]);
      await reader.cancel();
      Deno.stdin.setRaw(false);
      console.log("done");
    `;
    const child = spawnPty([Deno.execPath(), "eval", "--quiet", code], {
      cols: 80,
      rows: 24,
      term: "xterm",
      env: { PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin", NO_COLOR: "1" },
    });
    let text = "";
    const listeners = new Set<() => void>();
    child.onData((b) => {
      text += new TextDecoder().decode(b);
      for (const l of listeners) l();
    });
    const onChange = (wake: () => void) => (listeners.add(wake), () => listeners.delete(wake));
    const exited = new Promise((r) => child.onExit(r));
    try {
      await waitUntil(() => text.includes("reading"), onChange, () => `child: ${text}`);
      const fds = fdTable(child.pid);
      const stdin = fds.get(0)!;
      assert.match(stdin.target, /^\/dev\/pts\/\d+$/);
      // Non-blocking on fd 0 would leak to the shell that shares the terminal's description.
      assert.equal(stdin.flags & O_NONBLOCK, 0, "fd 0 was made non-blocking");
      const own = [...fds].filter(([fd, f]) =>
        fd > 2 && f.target === stdin.target && (f.flags & O_NONBLOCK) !== 0
      );
      assert.ok(
        own.length > 0,
        `no non-blocking descriptor of ${stdin.target}: the keyboard is read by a blocking read`,
      );
      child.write(new TextEncoder().encode("k"));
      await waitUntil(() => text.includes("done"), onChange, () => `child: ${text}`);
      assert.match(text, /got 107/);
      await exited;
    } finally {
      child.kill("SIGKILL");
    }
  },
});

Deno.test({
  name:
    "vault PTY: input written straight to the master arrives whole and in order past a full queue",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "fv-ptyw-" });
    await Deno.mkdir(`${dir}/dev/pts`, { recursive: true });
    const mount = await new Deno.Command("mount", {
      args: ["-t", "devpts", "-o", "newinstance,ptmxmode=0666", "devpts", `${dir}/dev/pts`],
    }).output();
    assert.ok(mount.success, "mount devpts");
    try {
      const pair = openVaultPty(dir, 80, 24);
      assert.ok(pair, "a PTY of the new devpts");
      // 256 KiB in 1 KiB writes (as pasted keyboard frames arrive), all in one turn: the PTY's
      // input queue (4 KiB) fills at once, and the rest must queue behind the first refused write.
      const total = 256 * 1024;
      const slave = `${dir}/dev/pts/${pair.index}`;
      // The slave as the child's terminal, opened by the shell that then becomes the program.
      const proc = new Deno.Command("sh", {
        args: [
          "-c",
          `exec setsid -c sh -c 'stty raw -echo -iexten; echo ready; head -c ${total} > ${dir}/got; echo done' <${slave} >${slave} 2>&1`,
        ],
        env: { PATH: "/usr/bin:/bin" },
        clearEnv: true,
        stdin: "null",
        stdout: "null",
        stderr: "piped",
      }).spawn();
      const pty = attachPty(pair.master, proc);
      await pasteWhole(pty, `${dir}/got`, total, (i) => (i * 7 + (i >> 10)) % 251);
      pty.kill("SIGKILL");
      await proc.status;
    } finally {
      await new Deno.Command("umount", { args: ["-l", `${dir}/dev/pts`] }).output();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "machine PTY (node-pty): a 256 KiB paste arrives whole and in order past a full queue",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "fv-ptyw-" });
    const total = 256 * 1024;
    const pty = spawnPty([
      "sh",
      "-c",
      `stty raw -echo -iexten; echo ready; head -c ${total} > ${dir}/got; echo done`,
    ], { cols: 80, rows: 24, term: "xterm", env: { PATH: "/usr/bin:/bin" } });
    try {
      await pasteWhole(pty, `${dir}/got`, total, (i) => (i * 13 + (i >> 9)) % 251);
    } finally {
      pty.kill("SIGKILL");
      await Deno.remove(dir, { recursive: true });
    }
  },
});
