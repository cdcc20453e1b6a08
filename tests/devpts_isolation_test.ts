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
import { openVaultPty, spawnPty, spawnPtyInRootfs } from "../src/console/pty.ts";
import { stopNamespace } from "../src/init/namespace.ts";
import { buildTestRootfs } from "./console_rootfs.ts";

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
      const exec = (script: string) =>
        sim.client(["exec", "--argv", "-n", "demo", "--", "sh", "-c", script]);

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
        `${cli} exec -t --argv demo -- sh -c 'tty; test -e "$(tty)" || exit 9; exit 3'; echo status-$?\r`,
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

/** A small rootfs with a /dev holding a devpts instance of its own, as prepareMounts makes it. */
async function rootfsWithDevpts(): Promise<{ root: string; close(): Promise<void> }> {
  const root = await buildTestRootfs();
  const run = async (...args: string[]) => {
    const out = await new Deno.Command(args[0], { args: args.slice(1), stderr: "piped" }).output();
    assert.ok(out.success, `${args.join(" ")}: ${decoder.decode(out.stderr)}`);
  };
  await Deno.mkdir(`${root}/dev/pts`, { recursive: true });
  await run("mount", "-t", "tmpfs", "tmpfs", `${root}/dev`);
  await Deno.mkdir(`${root}/dev/pts`);
  await run(
    "mount",
    "-t",
    "devpts",
    "-o",
    "newinstance,ptmxmode=0666",
    "devpts",
    `${root}/dev/pts`,
  );
  await Deno.symlink("pts/ptmx", `${root}/dev/ptmx`);
  return {
    root,
    async close() {
      await stopNamespace(root);
      await run("umount", "-R", "-l", `${root}/dev`);
      await Deno.remove(root, { recursive: true });
    },
  };
}

/** A program on a vault PTY, its output as text, and its exit. */
async function vaultProgram(root: string, argv: string[], cwd = "/") {
  const p = await spawnPtyInRootfs(
    root,
    argv,
    cwd,
    { PATH: "/usr/bin:/bin", TERM: "xterm", PS1: "fv# ", HOME: "/" },
    { cols: 80, rows: 24, term: "xterm" },
  );
  let text = "";
  let wake: (() => void) | null = null;
  p.onData((b) => {
    text += decoder.decode(b, { stream: true });
    wake?.();
  });
  const exit = new Promise<{ code: number | null; signal: string | null; text: string }>((r) =>
    p.onExit((e) => r({ ...e, text }))
  );
  return {
    p,
    exit,
    /** Waits (bounded) until the output matches, then forgets it. */
    async until(re: RegExp, ms = 10_000): Promise<string> {
      const deadline = Date.now() + ms;
      while (!re.test(text)) {
        if (Date.now() > deadline) throw new Error(`no ${re} in ${JSON.stringify(text)}`);
        let timer: ReturnType<typeof setTimeout> | undefined;
        await Promise.race([
          new Promise<void>((r) => wake = r),
          new Promise((r) => timer = setTimeout(r, deadline - Date.now())),
        ]);
        clearTimeout(timer);
      }
      const seen = text;
      text = "";
      return seen;
    },
  };
}

/** Descriptors of this process open on a ptmx under `root`. */
function mastersUnder(root: string): number {
  let n = 0;
  for (const e of Deno.readDirSync("/proc/self/fd")) {
    try {
      if (Deno.readLinkSync(`/proc/self/fd/${e.name}`).startsWith(`${root}/dev/pts/ptmx`)) n++;
    } catch {
      // closed meanwhile
    }
  }
  return n;
}

Deno.test({
  name:
    "vault PTY: resize reaches the program (SIGWINCH), all output before the exit, exit codes and signals, a failed entry is shown, every master closed",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const { root, close } = await rootfsWithDevpts();
    try {
      const sh = await vaultProgram(root, ["/bin/bash", "--norc", "--noprofile", "-i"]);
      await sh.until(/fv# $/);
      assert.equal(mastersUnder(root), 1, "the console's master is from the rootfs's devpts");
      sh.p.write(new TextEncoder().encode("trap 'echo winch-$(stty size)' WINCH; tty\r"));
      assert.match(await sh.until(/fv# $/), /\/dev\/pts\/0\r\n/);
      sh.p.resize(100, 50);
      await sh.until(/winch-50 100/);
      // Everything the program wrote reaches the reader before its exit.
      sh.p.write(
        new TextEncoder().encode(
          "i=0; while [ $i -lt 5000 ]; do echo line-$i; i=$((i+1)); done; exit 4\r",
        ),
      );
      const done = await sh.exit;
      assert.equal(done.code, 4);
      assert.match(done.text, /line-4999\r\n/);

      const killed = await vaultProgram(root, ["/usr/bin/sleep", "300"]);
      killed.p.kill("SIGTERM");
      assert.deepEqual({ ...(await killed.exit), text: "" }, {
        code: null,
        signal: "SIGTERM",
        text: "",
      });

      // A background process keeping the terminal open does not hold the exit back.
      const started = Date.now();
      const bg = await vaultProgram(root, ["/bin/sh", "-c", "sleep 300 & echo bg-started"]);
      const bgExit = await bg.exit;
      assert.equal(bgExit.code, 0);
      assert.match(bgExit.text, /bg-started/);
      assert.ok(Date.now() - started < 5000, `${Date.now() - started} ms`);

      // A failure to enter (here the working directory) is shown on the terminal.
      const bad = await vaultProgram(root, ["/bin/sh"], "/no-such-dir");
      const badExit = await bad.exit;
      assert.equal(badExit.code, 125);
      assert.match(badExit.text, /cannot change directory to '\/no-such-dir'/);

      // Output that came before anyone listened is kept for the first listener.
      const late = await spawnPtyInRootfs(root, ["/bin/sh", "-c", "echo early-$((6*7))"], "/", {
        PATH: "/usr/bin:/bin",
      }, { cols: 80, rows: 24, term: "xterm" });
      await new Promise((r) => late.onExit(r));
      let heard = "";
      late.onData((b) => heard += decoder.decode(b));
      assert.match(heard, /early-42/);

      assert.equal(mastersUnder(root), 0, "a master left open");
    } finally {
      await close();
    }
  },
});

Deno.test({
  name: "vault PTY: never from the machine's own devpts, nor from a /dev/pts that is not devpts",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const root = await buildTestRootfs();
    try {
      await Deno.mkdir(`${root}/dev/pts`, { recursive: true });
      assert.equal(openVaultPty(root, 80, 24), null, "a plain directory");
      const bind = await new Deno.Command("mount", {
        args: ["--bind", "/dev/pts", `${root}/dev/pts`],
      })
        .output();
      assert.ok(bind.success);
      try {
        assert.equal(openVaultPty(root, 80, 24), null, "the machine's devpts bound in");
      } finally {
        await new Deno.Command("umount", { args: ["-l", `${root}/dev/pts`] }).output();
      }
      // A link out of the rootfs is not followed.
      await Deno.remove(`${root}/dev/pts`);
      await Deno.symlink("/dev/pts", `${root}/dev/pts`);
      assert.equal(openVaultPty(root, 80, 24), null, "a symlink to the machine's /dev/pts");
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  },
});
