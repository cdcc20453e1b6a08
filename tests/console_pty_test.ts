/**
 * A real interactive session: the console client runs in a real PTY (a
 * bash we type into), talks over loopback streams to the init-side console
 * handler, which runs a login shell chrooted in a small rootfs.
 */
import assert from "node:assert/strict";
import { createConsoleSessions, serveConsole } from "../src/console/mod.ts";
import { StreamTag } from "../src/protocol/mod.ts";
import { startLoopbackServer } from "./console_loopback.ts";
import { buildTestRootfs } from "./console_rootfs.ts";
import { outerTerminal } from "./console_term.ts";

const FIXTURE = new URL("./console_client_fixture.ts", import.meta.url).pathname;

/** Waits until a process with exactly this NUL-joined cmdline exists (bounded). */
async function waitForProcess(cmdline: string, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    for await (const e of Deno.readDir("/proc")) {
      if (!/^\d+$/.test(e.name)) continue;
      const c = await Deno.readTextFile(`/proc/${e.name}/cmdline`).catch(() => "");
      if (c === cmdline) return;
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`no process ${JSON.stringify(cmdline)} within ${ms} ms`);
}

Deno.test({
  name:
    "console: a real session through a PTY — commands, resize, ^C, vi, reconnect, re-attach, modes restored",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const rootfs = await buildTestRootfs();
    const sessions = createConsoleSessions();
    const server = startLoopbackServer((tag, reader, writer) =>
      tag === StreamTag.console
        ? serveConsole(reader, writer, { rootfsDir: rootfs, sessions })
        : Promise.resolve()
    );
    const t = outerTerminal();
    try {
      await t.waitFor(/outer\$ $/);
      const client = `${Deno.execPath()} run -A --quiet ${FIXTURE} ${server.port}`;
      t.type(`stty -g > ${rootfs}/../fv-before.txt; ${client}\r`);
      await t.waitFor(/fv# $/);
      assert.equal(sessions.list().length, 1);
      assert.equal(sessions.list()[0].attached, true);

      // A command and its output.
      t.type("echo $((6*7))\r");
      await t.waitFor(/[\r\n]42\r\n/);
      await t.waitFor(/fv# $/);

      // The remote window follows a local resize (SIGWINCH → Resize).
      // SIGWINCH reaches the client asynchronously (as with ssh), so ask until it has arrived.
      t.pty.resize(123, 41);
      let size = "";
      for (let i = 0; i < 20 && !size.includes("41 123"); i++) {
        t.type("stty size\r");
        size = await t.waitFor(/\d+ \d+\r\n[\s\S]*fv# $/);
      }
      assert.match(size, /41 123/);

      // ^C interrupts a foreground program, not the session.
      t.type("sleep 100\r");
      await waitForProcess("sleep\x00100\x00");
      t.type("\x03");
      await t.waitFor(/fv# $/);
      t.type("echo alive-$?\r");
      await t.waitFor(/alive-130/);
      await t.waitFor(/fv# $/);

      // A full-screen program draws (alternate screen) and exits.
      t.type("vi /tmp/notes.txt\r");
      await t.waitFor(new RegExp(String.raw`\x1b\[\?1049h`)); // alternate screen on
      await t.waitFor(/notes\.txt/);
      t.type("ihello from vi\x1b:wq\r");
      await t.waitFor(new RegExp(String.raw`\x1b\[\?1049l`)); // and off
      await t.waitFor(/fv# $/);
      t.type("cat /tmp/notes.txt\r");
      await t.waitFor(/[\r\n]hello from vi\r\n/);

      // Lose the connection: the client reconnects by itself and the shell state is kept.
      t.type("X=survivor; echo set-$X\r");
      await t.waitFor(/set-survivor/);
      await t.waitFor(/fv# $/);
      server.dropAll();
      await t.waitFor(/connection lost/);
      await t.waitFor(/reconnected to session/);
      t.type("echo still-$X\r");
      await t.waitFor(/still-survivor/);
      await t.waitFor(/fv# $/);

      // ~. detaches; the terminal modes are exactly as before.
      t.type("\r~.");
      await t.waitFor(/\[fixture\] ended/);
      await t.waitFor(/outer\$ $/);
      t.type(
        `stty -g > ${rootfs}/../fv-after.txt; cmp ${rootfs}/../fv-before.txt ${rootfs}/../fv-after.txt && echo MODES-SAME\r`,
      );
      await t.waitFor(/[\r\n]MODES-SAME/);
      await t.waitFor(/outer\$ $/);
      assert.equal(sessions.list().length, 1);
      assert.equal(sessions.list()[0].attached, false);

      // A new client process re-attaches by default and repaints earlier output.
      t.type(`${client}\r`);
      const replay = await t.waitFor(/still-survivor[\s\S]*fv# $/);
      assert.match(replay, /hello from vi/);
      t.type("echo again-$X\r");
      await t.waitFor(/again-survivor/);

      // The session ends when its shell exits; the client exits with its code.
      t.type("exit 3\r");
      await t.waitFor(/\[fixture\] ended .*"code":3/);
      await t.waitFor(/outer\$ $/);
      t.type("echo client-exit-$?\r");
      await t.waitFor(/client-exit-3/);
      assert.equal(sessions.list().length, 0);
    } finally {
      t.pty.kill("SIGKILL");
      await sessions.closeAll();
      await server.close();
      await Deno.remove(rootfs, { recursive: true }).catch(() => {});
      await Deno.remove(`${rootfs}/../fv-before.txt`).catch(() => {});
      await Deno.remove(`${rootfs}/../fv-after.txt`).catch(() => {});
    }
  },
});
