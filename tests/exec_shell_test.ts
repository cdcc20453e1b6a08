/**
 * Issue 12 items 1 and 7: `fly-vault exec` as ssh runs a command — the words
 * after the vault name joined with spaces and run by the vault user's login
 * shell (pipes, quotes, `$VAR`, `;`, `&&`), options ending at the vault name,
 * exit statuses passed through; `--argv` runs argv without a shell; a missing
 * `-C` directory is named by its vault path only. The real client and real
 * init under flysim.
 */
import assert from "node:assert/strict";
import { startSim, vaultFor } from "./harness.ts";

Deno.test("exec runs the command line with the login shell, as ssh does", async () => {
  const sim = await startSim();
  try {
    const m = await sim.startMachine("m0001");
    await sim.writeConfig({ demo: vaultFor(sim, m) });
    const run = (...args: string[]) => sim.client(["exec", "-n", "demo", ...args]);

    const pipe = await run("echo a b c | tr ' ' '\\n' | head -2");
    assert.equal(pipe.stderr, "");
    assert.equal(pipe.stdout, "a\nb\n");
    assert.equal(pipe.code, 0);

    // Each word joined with a space, then the shell's own parsing: $HOME expands.
    const home = await run("--", "echo", "$HOME", "'$HOME'");
    assert.equal(home.stdout, "/root $HOME\n");
    const shell = await run('echo "$SHELL:${BASH_VERSION:+bash}"');
    assert.equal(shell.stdout, "/bin/bash:bash\n", "root's shell from the rootfs's /etc/passwd");

    const seq = await run("echo one; false && echo never; echo two");
    assert.equal(seq.stdout, "one\ntwo\n");
    const and = await run("true && echo yes || echo no");
    assert.equal(and.stdout, "yes\n");

    // Options after the vault name belong to the command.
    const ls = await run("ls", "-la", "/");
    assert.equal(ls.code, 0, ls.stderr);
    assert.match(ls.stdout, /^total /m);
    assert.match(ls.stdout, / root\n/);
    const dashes = await run("echo", "-C", "/nowhere", "--argv");
    assert.equal(dashes.stdout, "-C /nowhere --argv\n");

    // Exit statuses as the shell reports them.
    assert.equal((await run("exit 0")).code, 0);
    assert.equal((await run("false")).code, 1);
    assert.equal((await run("exit 3")).code, 3);
    const missing = await run("no-such-command-xyz");
    assert.equal(missing.code, 127);
    assert.match(missing.stderr, /no-such-command-xyz: command not found/);
    assert.equal((await run("kill -TERM $$")).code, 143);

    // exec -t: the same command line, on a PTY.
    const tty = await sim.client(["exec", "-t", "-n", "demo", "echo $((6*7)) | cat; exit 5"]);
    assert.match(tty.stdout, /^42\r?\n/);
    assert.equal(tty.code, 5, tty.stderr);
  } finally {
    await sim.close();
  }
});

Deno.test("exec --argv runs argv without a shell; -C to a missing directory names no host path", async () => {
  const sim = await startSim();
  try {
    const m = await sim.startMachine("m0002");
    await sim.writeConfig({ demo: vaultFor(sim, m) });

    const literal = await sim.client([
      "exec",
      "--argv",
      "-n",
      "demo",
      "--",
      "echo",
      "$HOME",
      "a|b",
    ]);
    assert.equal(literal.stdout, "$HOME a|b\n");
    assert.equal(literal.code, 0);
    const short = await sim.client([
      "exec",
      "-A",
      "-n",
      "demo",
      "sh",
      "-c",
      "echo $0; exit 4",
      "zero",
    ]);
    assert.equal(short.stdout, "zero\n");
    assert.equal(short.code, 4);
    const none = await sim.client(["exec", "-A", "-n", "demo", "--", "no-such-command-xyz"]);
    assert.equal(none.code, 127);

    for (const mode of [[], ["--argv"], ["-t"]]) {
      const cwd = await sim.client([
        "exec",
        ...mode,
        "-n",
        "-C",
        "/nonexistent",
        "demo",
        "--",
        "pwd",
      ]);
      assert.match(
        cwd.stderr,
        /^error\[exec\.no_cwd\]: \/nonexistent: no such directory in the vault\nhint: /,
        mode.join(" "),
      );
      assert.equal(cwd.code, 1, mode.join(" "));
      assert.ok(!cwd.stderr.includes(sim.dir), "no host path");
      assert.ok(!/rootfs|volumes|\/usr\/bin\/env/.test(cwd.stderr), cwd.stderr);
    }
    const fileCwd = await sim.client(["exec", "-n", "-C", "/etc/passwd", "demo", "pwd"]);
    assert.match(
      fileCwd.stderr,
      /error\[exec\.no_cwd\]: \/etc\/passwd: not a directory in the vault/,
    );
    const ok = await sim.client(["exec", "-n", "-C", "/etc", "demo", "pwd"]);
    assert.equal(ok.stdout, "/etc\n");
  } finally {
    await sim.close();
  }
});
