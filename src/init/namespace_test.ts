import assert from "node:assert/strict";
import { buildHostRootfs } from "../flysim/mod.ts";
import {
  ensureNamespace,
  stopNamespace,
  userNamespaceFilter,
  VAULT_CAP_MASK,
} from "./namespace.ts";
import { detectSandbox } from "./sandbox.ts";

const text = async (child: Deno.ChildProcess) => {
  const out = await child.output();
  return { code: out.code, text: new TextDecoder().decode(out.stdout) };
};

Deno.test("the vault: own PIDs and /, exact signals and exit codes, everything ended by stop", async () => {
  assert.equal(await detectSandbox(), "root", "these tests run as root, as CI does");
  const dir = await Deno.makeTempDir({ prefix: "fv-ns-" });
  const rootfs = `${dir}/rootfs`;
  await buildHostRootfs(rootfs);
  await Deno.writeTextFile(`${dir}/outside`, "machine file\n");
  try {
    const ns = await ensureNamespace(rootfs);
    assert.equal(await ensureNamespace(rootfs), ns, "one vault per rootfs");
    const sh = (script: string, cwd = "/") =>
      ns.spawn(["sh", "-c", script], cwd, { env: { PATH: "/usr/bin:/bin" }, stdout: "piped" });

    const seen = await text(sh("ls /proc | grep -E '^[0-9]+$' | tr '\\n' ' '; echo; pwd"));
    const pids = seen.text.split("\n")[0].trim().split(" ").map(Number);
    assert.ok(pids.includes(1) && !pids.includes(Deno.pid), seen.text);
    // The holder, sh, ls, grep, tr.
    assert.ok(pids.length <= 6, `only the vault's processes: ${seen.text}`);
    assert.equal(seen.text.split("\n")[1], "/");
    const tmp = await text(sh("pwd", "/tmp"));
    assert.equal(tmp.text, "/tmp\n");

    const escape = await text(
      sh(`cat /proc/1/root/../outside ../outside /../outside ${dir}/outside 2>&1; ls /..`),
    );
    assert.doesNotMatch(escape.text, /machine file/);
    assert.doesNotMatch(escape.text, /outside\n$/);

    // Capabilities cut to the kept set; the holder (PID 1) keeps none.
    const kept = VAULT_CAP_MASK.toString(16).padStart(16, "0");
    const caps = await text(sh("grep -E '^Cap(Eff|Bnd|Inh)' /proc/self/status /proc/1/status"));
    assert.equal(
      caps.text,
      `/proc/self/status:CapInh:\t${"0".repeat(16)}\n/proc/self/status:CapEff:\t${kept}\n` +
        `/proc/self/status:CapBnd:\t${kept}\n/proc/1/status:CapInh:\t${"0".repeat(16)}\n` +
        `/proc/1/status:CapEff:\t${"0".repeat(16)}\n/proc/1/status:CapBnd:\t${"0".repeat(16)}\n`,
    );
    // `env` is the program's, exactly, even what a loader would act on; perl's own comes from init.
    const env = await text(ns.spawn(["env"], "/", {
      env: { PATH: "/usr/bin:/bin", LD_PRELOAD: "/nonexistent.so", "A B": "x=y z" },
      stdout: "piped",
      stderr: "piped",
    }));
    assert.deepEqual(env.text.trim().split("\n").sort(), [
      "A B=x=y z",
      "LD_PRELOAD=/nonexistent.so",
      "PATH=/usr/bin:/bin",
    ]);
    const pty = ns.ptyCommand(["env"], "/", { LD_PRELOAD: "/x.so" });
    assert.deepEqual(Object.keys(pty.env), ["PATH"], "the PTY's own environment is init's");
    assert.ok(pty.argv.includes("LD_PRELOAD=/x.so"));
    // Like env(1): 125 for a working directory that is missing, 127 for a program.
    const missing = async (
      argv: string[],
      cwd: string,
    ) => (await ns.spawn(argv, cwd, { env: { PATH: "/bin" }, stderr: "piped" }).output());
    const noDir = await missing(["true"], "/no/such/dir");
    assert.equal(noDir.code, 125);
    assert.match(new TextDecoder().decode(noDir.stderr), /cannot change directory to '\/no\/such/);
    assert.equal((await missing(["no-such-program"], "/")).code, 127);

    assert.equal((await sh("exit 7").status).code, 7);
    const sleeper = ns.spawn(["sleep", "100"], "/", { env: {} });
    sleeper.kill("SIGTERM"); // the spawned pid is the program itself
    assert.equal((await sleeper.status).signal, "SIGTERM");

    // Left behind: an orphan and a process that ignores SIGTERM. stop() ends them all.
    const stubborn = sh("(sleep 300 &); trap '' TERM; echo up; while :; do sleep 1; done");
    const r = stubborn.stdout.getReader();
    await r.read();
    r.releaseLock();
    assert.ok((await ns.pids()).length >= 2, "the orphan and the shell");
    const started = performance.now();
    const found = await stopNamespace(rootfs, 300);
    assert.ok(found >= 2, `found ${found}`);
    assert.equal((await stubborn.status).signal, "SIGKILL");
    assert.ok(performance.now() - started < 5000);
    assert.deepEqual(await ns.pids(), [], "nothing left in the namespace");
    await stubborn.stdout.cancel();

    const fresh = await ensureNamespace(rootfs);
    assert.notEqual(fresh.holderPid, ns.holderPid, "a new vault after stop");
    assert.throws(() => ns.spawn(["true"], "/", { env: {} }), /has ended/);
  } finally {
    await stopNamespace(rootfs);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the user-namespace seccomp filter is built for both architectures, jumps in range", () => {
  for (const arch of ["x86_64", "aarch64"]) {
    const hex = userNamespaceFilter(arch);
    assert.equal(hex.length % 16, 0);
    const ops = hex.length / 16;
    for (let i = 0; i < ops; i++) {
      if ((parseInt(hex.slice(i * 16, i * 16 + 2), 16) & 0x07) !== 0x05) continue; // not a jump
      const jt = parseInt(hex.slice(i * 16 + 4, i * 16 + 6), 16);
      const jf = parseInt(hex.slice(i * 16 + 6, i * 16 + 8), 16);
      assert.ok(i + 1 + Math.max(jt, jf) < ops, `${arch}: op ${i} jumps past the end`);
    }
    // The last two instructions: EPERM and ENOSYS returns.
    assert.equal(hex.slice(-32), "0600000001000500" + "0600000026000500");
  }
  assert.throws(() => userNamespaceFilter("mips"), /no vault support/);
});
