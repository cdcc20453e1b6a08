/**
 * The vault's terminals are its own (issue 14.5): its /dev/pts is a devpts
 * instance of its own, not the machine's, so root inside cannot open, read
 * or type into a terminal of the machine (an operator's `fly ssh console`,
 * under flysim the developer's own terminals). A console's and `exec -t`'s
 * terminal comes from that instance, so `tty` names a file that exists
 * inside, and programs inside allocate PTYs there. Real client, real init
 * under flysim; the machine's terminal is a PTY this test opens.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { ROOT, startSim, vaultFor } from "./harness.ts";
import { outerTerminal } from "./console_term.ts";
import { spawnPty } from "../src/console/pty.ts";

const PROMPT = /root@vault:[^\r\n]*[#$] $/;
const decoder = new TextDecoder();

Deno.test({
  name:
    "the vault's /dev/pts is its own: the machine's PTYs are not there nor openable; a console's tty exists inside; PTYs allocate inside",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const sim = await startSim();
    // A terminal of the machine: what an operator's session would be.
    const host = spawnPty(["/bin/sleep", "120"], {
      cols: 80,
      rows: 24,
      term: "xterm",
      env: { PATH: "/usr/bin:/bin" },
    });
    let hostSaw = "";
    host.onData((b) => hostSaw += decoder.decode(b));
    const t = outerTerminal({ FLY_VAULT_CONFIG_DIR: sim.configDir });
    try {
      const hostPts = await Deno.readLink(`/proc/${host.pid}/fd/0`);
      const n = Number(/^\/dev\/pts\/(\d+)$/.exec(hostPts)?.[1]);
      assert.ok(Number.isInteger(n), hostPts);
      const m = await sim.startMachine("d0001");
      await sim.writeConfig({ demo: vaultFor(sim, m) });
      const exec = (script: string) => sim.client(["exec", "-n", "demo", "--", "sh", "-c", script]);

      // With no console open, the vault's /dev/pts holds its ptmx only, and /dev/ptmx leads there.
      const ls = await exec(
        "ls -A /dev/pts; readlink /dev/ptmx; grep -c ' /dev/pts .* - devpts ' /proc/self/mountinfo",
      );
      assert.equal(ls.code, 0, ls.stderr);
      assert.equal(ls.stdout, "ptmx\npts/ptmx\n1\n", "the machine's terminals are listed inside");

      // The machine's terminal cannot be opened by its number (nor typed into).
      const open = await exec(
        `test -e /dev/pts/${n} && echo exists; echo INJECTED-$((2*21)) > /dev/pts/${n}; echo rc=$?`,
      );
      assert.doesNotMatch(open.stdout, /exists/);
      assert.match(open.stdout, /rc=[1-9]/, open.stderr);

      // A console: its terminal is one of the vault's, named by a path that exists inside.
      const cli = `${Deno.execPath()} run -A --quiet ${join(ROOT, "bin", "fly-vault.ts")}`;
      await t.waitFor(/outer\$ $/);
      t.type(`${cli} connect demo\r`);
      await t.waitFor(PROMPT, 60_000);
      t.type('tty; test -e "$(tty)" && echo "exists-$((1+1))"; stty size\r');
      const shown = await t.waitFor(/exists-2\r\n\d+ \d+\r\n/);
      assert.match(shown, /[\r\n]\/dev\/pts\/\d+\r\nexists-2\r\n30 100\r\n/);
      await t.waitFor(PROMPT);
      // Only the vault's own PTYs are listed: the console's.
      t.type("echo ls:$(ls -A /dev/pts | tr '\\n' ' ')\r");
      await t.waitFor(/ls:\d+ ptmx\r\n/);
      await t.waitFor(PROMPT);
      // A program inside allocates a PTY of the same instance.
      t.type(
        `python3 -c 'import os, pty; m, s = pty.openpty(); p = os.ttyname(s); ` +
          `print("inner", p, os.path.exists(p), len(os.listdir("/dev/pts")))'\r`,
      );
      await t.waitFor(/inner \/dev\/pts\/\d+ True 3\r\n/);
      await t.waitFor(PROMPT);
      // Job control works on it: ^Z stops the foreground job, ^C interrupts one.
      t.type("sleep 4343\r");
      await waitForCmdline("sleep\x004343\x00");
      t.type("\x1a");
      await t.waitFor(/Stopped/);
      await t.waitFor(PROMPT);
      t.type("kill %1; sleep 4242\r");
      await waitForCmdline("sleep\x004242\x00");
      t.type("\x03");
      await t.waitFor(PROMPT);
      t.type("echo alive-$?\r");
      await t.waitFor(/alive-130/);
      await t.waitFor(PROMPT);
      t.type("exit\r");
      await t.waitFor(/outer\$ $/);

      // exec -t: the same, and the exit status comes back.
      t.type(
        `${cli} exec -t demo -- sh -c 'tty; test -e "$(tty)" || exit 9; exit 3'; echo status-$?\r`,
      );
      await t.waitFor(/\/dev\/pts\/\d+\r\n[\s\S]*status-3/);
      await t.waitFor(/outer\$ $/);
      assert.doesNotMatch(hostSaw, /INJECTED/);
    } finally {
      host.kill("SIGKILL");
      t.pty.kill("SIGKILL");
      await sim.close();
    }
  },
});

/** Waits (bounded) until a process runs with this NUL-joined cmdline. */
async function waitForCmdline(cmdline: string, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    for await (const e of Deno.readDir("/proc")) {
      if (!/^\d+$/.test(e.name)) continue;
      if (await Deno.readTextFile(`/proc/${e.name}/cmdline`).catch(() => "") === cmdline) return;
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`no process ${JSON.stringify(cmdline)} within ${ms} ms`);
}
