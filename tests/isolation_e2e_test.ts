/**
 * Issue 14.5 end to end: what a program in the vault can see. The real
 * client runs commands through a real init under flysim; from inside, init,
 * its environment and the machine's own filesystem must be out of reach,
 * while the workload, consoles and execs share one PID namespace, like one
 * machine. A reprovision ends the old vault and starts a fresh one. Root
 * inside keeps only the capabilities a developer needs (no mount, mknod,
 * ptrace of the holder), and the client's environment reaches only the
 * program, never the machine's programs that enter the vault.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { hostRootfsTemplate, ROOT, startSim, TOKEN, vaultFor } from "./harness.ts";
import { outerTerminal } from "./console_term.ts";
import { VAULT_CAP_MASK } from "../src/init/namespace.ts";

const PROMPT = /root@vault:[^\r\n]*[#$] $/;

/** The template this file's machines start from declares a workload: `sleep 1001`. */
async function withWorkload(): Promise<void> {
  const dir = join(await hostRootfsTemplate(), ".fly-vault");
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(join(dir, "image.json"), JSON.stringify({ Cmd: ["sleep", "1001"] }));
}

/** CapPrm/CapEff/CapBnd of a program in the vault, as /proc/PID/status prints them. */
const KEPT = VAULT_CAP_MASK.toString(16).padStart(16, "0");

/** Copies the machine's `programs` and the libraries `ldd` names into the template rootfs. */
async function withHostTools(programs: string[]): Promise<void> {
  const root = await hostRootfsTemplate();
  const copy = async (path: string) => {
    // Never write through a link already there: it may point at the machine's own file.
    if (await Deno.lstat(join(root, path)).then(() => true, () => false)) return;
    await Deno.mkdir(join(root, path, ".."), { recursive: true });
    const cp = await new Deno.Command("cp", { args: ["-L", path, join(root, path)] }).output();
    assert.ok(cp.success, `cp ${path}`);
  };
  for (const program of programs) {
    const path = ["/usr/bin/", "/usr/sbin/", "/bin/", "/sbin/"].map((d) => d + program)
      .find((p) => {
        try {
          return Deno.statSync(p).isFile;
        } catch {
          return false;
        }
      });
    assert.ok(path, `the machine has no ${program} (.ci/apt-packages)`);
    await copy(path);
    const ldd = await new Deno.Command("ldd", { args: [path], stdout: "piped" }).output();
    for (const [, lib] of new TextDecoder().decode(ldd.stdout).matchAll(/(\/[^\s)]+)/g)) {
      await copy(lib);
    }
  }
}

/** The vault holder's host pid: the child of the `unshare` init started. */
async function holderOf(initPid: number): Promise<number> {
  for (
    const pid of (await Deno.readTextFile(`/proc/${initPid}/task/${initPid}/children`)).split(" ")
  ) {
    const cmd = await Deno.readTextFile(`/proc/${pid}/cmdline`).catch(() => "");
    if (/(^|\/)unshare\0--mount\0--pid/.test(cmd)) {
      return Number((await Deno.readTextFile(`/proc/${pid}/task/${pid}/children`)).trim());
    }
  }
  throw new Error("no vault holder");
}

/** Every command line visible under /proc inside, one per line. */
const LIST_PROCS =
  "for p in /proc/[0-9]*; do printf '%s ' \"${p#/proc/}\"; tr '\\0' ' ' < $p/cmdline; echo; done";

Deno.test({
  name: "from inside exec, init, its token and the machine's / are out of reach",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await withWorkload();
    const sim = await startSim();
    try {
      const m = await sim.startMachine("i0001");
      await sim.writeConfig({ demo: vaultFor(sim, m) });
      const exec = (script: string) =>
        sim.client(["exec", "--argv", "-n", "demo", "--", "sh", "-c", script]);
      // A file on the machine outside the rootfs, as the developer's files are under flysim.
      const marker = join(sim.dir, `host-marker-${crypto.randomUUID().slice(0, 8)}`);
      await Deno.writeTextFile(marker, "machine secret\n");

      const procs = await exec(LIST_PROCS);
      assert.equal(procs.code, 0, procs.stderr);
      const lines = procs.stdout.trim().split("\n").filter((l) => /^\d+ /.test(l));
      assert.ok(!/deno|fly-vault-init/.test(procs.stdout), `init is visible:\n${procs.stdout}`);
      assert.match(lines[0], /^1 /, "the vault's own PID 1 comes first");
      assert.ok(lines.some((l) => /sleep 1001/.test(l)), "the workload runs in the same vault");
      assert.ok(lines.length < 10, `only the vault's processes:\n${procs.stdout}`);
      const initDir = await exec(`test -e /proc/${m.pid}/root${marker} && echo reachable`);
      assert.equal(initDir.stdout, "");

      // Not through any process's root or cwd, nor by climbing above /.
      const climb = await exec(
        `for p in /proc/[0-9]*; do cat $p/root${marker} $p/cwd${marker} 2>/dev/null; done; ` +
          `cat /../../../..${marker} ${marker} 2>/dev/null; ` +
          "mkdir -p /tmp/x && cd /tmp/x && cd ../../../../.. && pwd && ls",
      );
      assert.doesNotMatch(climb.stdout, /machine secret/);
      const rootList = (await exec("ls /")).stdout;
      assert.equal(climb.stdout, `/\n${rootList}`, "above / is / itself");
      const mounts = await exec("cat /proc/self/mountinfo");
      // Every mount point is inside the vault (the 4th field, a bind's source, may name the host path).
      const points = mounts.stdout.trim().split("\n").map((l) => l.split(" ")[4]);
      assert.ok(points.includes("/proc") && points.includes("/"), mounts.stdout);
      assert.ok(!points.some((p) => p.includes(sim.dir)), `host mounts inside:\n${mounts.stdout}`);

      // No environment a program inside can read holds the token.
      const environ = await exec(
        "cat /proc/1/environ; for p in /proc/[0-9]*; do cat $p/environ; done",
      );
      assert.equal(environ.code, 0, environ.stderr);
      assert.ok(!environ.stdout.includes("ACCESS_TOKEN"), "ACCESS_TOKEN in an environ inside");
      assert.ok(!environ.stdout.includes(TOKEN), "the token in an environ inside");

      // Exit codes, signals and the working directory are as before.
      assert.equal(
        (await sim.client(["exec", "--argv", "-n", "demo", "--", "sh", "-c", "exit 7"])).code,
        7,
      );
      const killed = await exec("kill -TERM $$");
      assert.equal(killed.code, 143);
      const cwd = await sim.client(["exec", "-n", "-C", "/tmp", "demo", "--", "pwd"]);
      assert.equal(cwd.stdout, "/tmp\n", cwd.stderr);
    } finally {
      await sim.close();
    }
  },
});

Deno.test({
  name:
    "root in the vault keeps only the kept capabilities: no mount, mknod or holder's caps; chown, a port < 1024, ping and chroot work",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await withWorkload();
    await withHostTools(["mount", "mknod", "ping", "chroot", "unshare"]);
    const sim = await startSim();
    try {
      const m = await sim.startMachine("i0003");
      await sim.writeConfig({ demo: vaultFor(sim, m) });
      const exec = (script: string, flags: string[] = []) =>
        sim.client(["exec", "--argv", "-n", ...flags, "demo", "--", "sh", "-c", script]);

      // Every set of an exec'd program, and of the workload; the holder (PID 1) has none.
      const caps = await exec(
        "grep Cap /proc/self/status; echo; " +
          "for p in /proc/[0-9]*; do grep -q 'slee[p]' $p/cmdline && grep Cap $p/status; done; " +
          "echo; grep Cap /proc/1/status",
      );
      assert.equal(caps.code, 0, caps.stderr);
      const sets = (want: string) =>
        `CapInh:\t${"0".repeat(16)}\nCapPrm:\t${want}\nCapEff:\t${want}\nCapBnd:\t${want}\n` +
        `CapAmb:\t${"0".repeat(16)}\n`;
      assert.equal(caps.stdout, `${sets(KEPT)}\n${sets(KEPT)}\n${sets("0".repeat(16))}`);
      assert.equal(KEPT, "00000000a00425fb", "Docker's default set without MKNOD");

      // No mounting (tmpfs, devtmpfs: the machine's disks), no device nodes.
      const mount = await exec(
        "mkdir -p /mnt/t /mnt/d; mount -t tmpfs x /mnt/t; echo tmpfs=$?; " +
          "mount -t devtmpfs x /mnt/d; echo devtmpfs=$?; ls /mnt/d | head -3; " +
          "mknod /tmp/sda b 8 0; echo mknod=$?; mknod /tmp/null c 1 3; echo mknodc=$?",
      );
      assert.match(mount.stdout, /^tmpfs=32\ndevtmpfs=32\nmknod=1\nmknodc=1\n$/, mount.stdout);
      assert.match(mount.stderr, /permission denied/i);
      assert.match(mount.stderr, /Operation not permitted/);
      // Nor by making a user namespace to be root over mounts of its own (seccomp, as Docker);
      // threads still start (glibc falls back from clone3 to clone).
      const userns = await exec(
        "unshare --user --map-root-user --mount sh -c 'mount -t tmpfs x /mnt && echo mounted'; " +
          "echo userns=$?; " +
          `python3 -c 'import threading; threading.Thread(target=print, args=("thread",)).start()'`,
      );
      assert.equal(userns.stdout, "userns=1\nthread\n", userns.stderr);
      assert.match(userns.stderr, /unshare failed: Operation not permitted/);
      // Kernel knobs a write alone would turn (core_pattern runs a program as the machine's
      // root) are read-only: the open for writing fails, nothing is written either way.
      const knobs = await exec(
        "(: >> /proc/sys/kernel/core_pattern); echo sysctl=$?; cat /proc/self/mountinfo",
      );
      assert.match(knobs.stdout, /^sysctl=2\n/, knobs.stderr);
      assert.match(knobs.stderr, /Read-only file system/);
      const mounts = knobs.stdout.trim().split("\n").slice(1).map((l) => l.split(" "));
      const under = (dir: string) =>
        mounts.filter(([, , , , point]) => point === dir || point.startsWith(`${dir}/`));
      assert.ok(under("/sys").length >= 1 && under("/proc/sys").length === 1, knobs.stdout);
      for (const dir of ["/sys", "/proc/sys", "/proc/irq", "/proc/bus", "/proc/fs"]) {
        for (const m of under(dir)) {
          assert.ok(m[5].split(",").includes("ro"), `${m[4]} is writable:\n${knobs.stdout}`);
        }
      }
      // Nor from the holder: it is not dumpable, so its memory, fds and root are closed.
      const holder = await exec(
        "cat /proc/1/environ /proc/1/mem; readlink /proc/1/root /proc/1/fd/0; echo done",
      );
      assert.equal(holder.stdout, "done\n");
      assert.match(holder.stderr, /Permission denied/);

      // What a developer does as root still works.
      const dev = await exec(
        "touch /tmp/owned && chown 1000:1000 /tmp/owned && stat -c %u:%g /tmp/owned && " +
          "ping -c1 -W5 127.0.0.1 >/dev/null && echo ping ok && " +
          "chroot / true && echo chroot ok && " +
          `python3 -c 'import socket
for port in range(1023, 900, -1):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port)); s.listen(); print("bound", port < 1024); break
    except OSError as e:
        if e.errno != 98: raise
'`,
      );
      assert.equal(dev.stdout, "1000:1000\nping ok\nchroot ok\nbound True\n", dev.stderr);

      // The client's environment is the program's only: the machine's programs that enter the
      // vault never load a library a tenant names (here a broken libc in its rootfs).
      const evil = `/proc/${await holderOf(m.pid)}/root/tmp/evil`;
      const plant = await exec("mkdir -p /tmp/evil && echo not-elf > /tmp/evil/libc.so.6");
      assert.equal(plant.code, 0, plant.stderr);
      for (const name of ["LD_LIBRARY_PATH", "LD_PRELOAD"]) {
        const value = name === "LD_PRELOAD" ? `${evil}/libc.so.6` : evil;
        const run = await exec(`echo "$${name}"`, ["-e", `${name}=${value}`]);
        assert.equal(run.code, 0, `${name}: ${run.stderr}`);
        assert.equal(run.stdout, `${value}\n`);
        // (Inside, the path names nothing: the program's own loader may say it cannot open it.)
        assert.doesNotMatch(run.stderr, /error while loading|invalid ELF header|file too short/);
      }
    } finally {
      await sim.close();
    }
  },
});

Deno.test({
  name:
    "a console and an exec share the vault; ^C reaches the program; a reprovision starts a new vault",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await withWorkload();
    const sim = await startSim();
    const t = outerTerminal({ FLY_VAULT_CONFIG_DIR: sim.configDir });
    try {
      const m = await sim.startMachine("i0002");
      await sim.writeConfig({ demo: vaultFor(sim, m) });
      const cli = `${Deno.execPath()} run -A --quiet ${join(ROOT, "bin", "fly-vault.ts")}`;
      await t.waitFor(/outer\$ $/);
      t.type(`${cli} connect demo\r`);
      await t.waitFor(PROMPT, 60_000);
      // The console sees the workload...
      t.type(
        "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline; echo; done | grep -c 'slee[p] 1001'\r",
      );
      await t.waitFor(/[\r\n]1\r\n/);
      await t.waitFor(PROMPT);
      // A console's shell has the same reduced capabilities.
      t.type("grep CapEff /proc/$$/status\r");
      await t.waitFor(new RegExp(`CapEff:\\s+${KEPT}`));
      await t.waitFor(PROMPT);
      // ...and an exec sees the console's shell and what it runs.
      t.type("sleep 4242\r");
      let seen = "";
      for (let i = 0; i < 50 && !/sleep 4242/.test(seen); i++) {
        seen =
          (await sim.client(["exec", "--argv", "-n", "demo", "--", "sh", "-c", LIST_PROCS])).stdout;
      }
      assert.match(seen, /sleep 4242/);
      assert.match(seen, /\/bin\/bash -l/);
      // ^C goes to the program on the terminal, and the shell lives on.
      t.type("\x03");
      await t.waitFor(PROMPT);
      t.type("echo still-$((6*7))\r");
      await t.waitFor(/still-42/);
      await t.waitFor(PROMPT);
      t.type("\r~.");
      await t.waitFor(/outer\$ $/);

      const startOf1 = async () =>
        (await sim.client(["exec", "-n", "demo", "--", "cat", "/proc/1/stat"])).stdout.split(
          " ",
        )[21];
      const before = await startOf1();
      const image = join(sim.dir, "v2.tar.gz");
      const tar = await new Deno.Command("tar", {
        args: ["-czf", image, "--numeric-owner", "-C", await hostRootfsTemplate(), "."],
      }).output();
      assert.ok(tar.success);
      await sim.writeConfig({ demo: vaultFor(sim, m, { rootfs: image }) });
      const running = sim.client(["exec", "-n", "demo", "--", "sleep", "300"]);
      // Wait until it runs in the vault before reprovisioning.
      for (let i = 0; i < 50; i++) {
        const list =
          (await sim.client(["exec", "--argv", "-n", "demo", "--", "sh", "-c", LIST_PROCS])).stdout;
        if (/sleep 300/.test(list)) break;
      }
      const again = await sim.client(["connect", "demo", "--reprovision"]);
      assert.equal(again.code, 0, again.stderr);
      assert.notEqual((await running).code, 0, "the old vault's process was ended by the swap");
      const after = await startOf1();
      assert.ok(before && after && before !== after, `a new vault: ${before} → ${after}`);
      const procs =
        (await sim.client(["exec", "--argv", "-n", "demo", "--", "sh", "-c", LIST_PROCS])).stdout;
      assert.doesNotMatch(procs, /sleep 300|sleep 4242/);
      assert.match(procs, /sleep 1001/, "the workload restarted in the new vault");
      // The old vault's holder is gone: init has one namespace holder left.
      const holders = [];
      for (
        const task of (await Deno.readTextFile(`/proc/${m.pid}/task/${m.pid}/children`)).split(" ")
      ) {
        const cmd = await Deno.readTextFile(`/proc/${task}/cmdline`).catch(() => "");
        if (cmd.startsWith("unshare\0--mount\0--pid") || cmd.includes("/unshare\0--mount\0--pid")) {
          holders.push(task);
        }
      }
      assert.equal(holders.length, 1, `holders: ${holders}`);
    } finally {
      t.pty.kill("SIGKILL");
      await sim.close();
    }
  },
});
