/**
 * Issue 14 (items 2, 3, 4) end to end, through the real client and init:
 * mount points that are symlinks are refused before the swap; a rootfs whose
 * /root is a symlink is never `ready`; init never follows `/.fly-vault` out
 * of the rootfs; a stalled `rootfs_url` neither stops exec nor wedges the
 * vault; a client that leaves mid-upload frees the vault at once.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import type { LaunchedMachine } from "../src/flysim/runner.ts";
import { hostRootfsTemplate, layRootfs, ROOT, type Sim, startSim, vaultFor } from "./harness.ts";

async function tarball(dir: string, path: string): Promise<void> {
  const out = await new Deno.Command("tar", {
    args: ["-czf", path, "--numeric-owner", "-C", dir, "."],
    stderr: "piped",
  }).output();
  if (!out.success) throw new Error(new TextDecoder().decode(out.stderr));
}

/** A copy of the host rootfs template, changed by `edit`, packed as `<name>.tar.gz`. */
async function image(sim: Sim, name: string, edit: (dir: string) => Promise<void>) {
  const dir = join(sim.dir, "images", name);
  await Deno.mkdir(dir, { recursive: true });
  const cp = await new Deno.Command("cp", { args: ["-a", `${await hostRootfsTemplate()}/.`, dir] })
    .output();
  assert.ok(cp.success);
  await edit(dir);
  const tar = join(sim.dir, "images", `${name}.tar.gz`);
  await tarball(dir, tar);
  return tar;
}

/** A provisioned machine whose rootfs says `version` in /etc/image-version. */
async function machine(sim: Sim, id: string, env?: Record<string, string>) {
  const m = await sim.startMachine(id, { env });
  await Deno.writeTextFile(join(sim.dir, "volumes", id, "rootfs", "etc", "image-version"), "1\n");
  return m;
}

const exec = (sim: Sim, script: string) =>
  sim.client(["exec", "--argv", "-n", "demo", "--", "sh", "-c", script]);

/** The client run in the background, its stdout read line by line. */
function spawnClient(sim: Sim, args: string[]) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--quiet", join(ROOT, "bin", "fly-vault.ts"), ...args],
    env: { FLY_VAULT_CONFIG_DIR: sim.configDir, NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const lines: string[] = [];
  const waiters: Array<{ test: (l: string) => boolean; resolve: () => void }> = [];
  const stdoutDone = (async () => {
    let buf = "";
    for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
      buf += chunk;
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        lines.push(line);
        for (const w of [...waiters]) {
          if (w.test(line)) (waiters.splice(waiters.indexOf(w), 1), w.resolve());
        }
      }
    }
  })();
  const stderr = new Response(child.stderr).text();
  return {
    child,
    lines,
    /** Resolves at the first stdout line `test` accepts (deadline: `ms`). */
    waitLine(test: (l: string) => boolean, ms = 60_000) {
      if (lines.some(test)) return Promise.resolve();
      return new Promise<void>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`no such line in ${ms} ms: ${lines}`)), ms);
        waiters.push({ test, resolve: () => (clearTimeout(t), resolve()) });
      });
    },
    /** Its exit; after `ms` the client is killed and this throws. */
    async result(ms = 120_000) {
      let timedOut = false;
      const timer = setTimeout(() => (timedOut = true, killTree(child.pid)), ms);
      const status = await child.status;
      clearTimeout(timer);
      if (timedOut) throw new Error(`the client did not finish within ${ms} ms: ${lines}`);
      await stdoutDone;
      return { code: status.code, stdout: lines.join("\n"), stderr: await stderr };
    },
  };
}

Deno.test({
  name:
    "a reprovision whose /root or /home is a symlink is refused, entry named; the old rootfs serves",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const sim = await startSim();
    try {
      const m = await machine(sim, "h0001");
      for (
        const [name, rel, target] of [["rootlink", "root", "/"], ["homelink", "home", "/etc"]]
      ) {
        const tar = await image(sim, name, async (dir) => {
          await Deno.remove(join(dir, rel), { recursive: true }).catch(() => {});
          await Deno.symlink(target, join(dir, rel));
          await Deno.writeTextFile(join(dir, "etc", "image-version"), "2\n");
        });
        await sim.writeConfig({ demo: vaultFor(sim, m, { rootfs: tar }) });
        const r = await sim.client(["connect", "demo", "--reprovision"]);
        assert.equal(r.code, 255, r.stdout + r.stderr);
        assert.match(r.stderr, /rootfs\.bad_mount_point/);
        assert.match(r.stderr, new RegExp(`/${rel} in the image is a symlink \\(-> ${target}\\)`));
        assert.equal((await exec(sim, "cat /etc/image-version")).stdout, "1\n", "v1 serves");
      }
      // /root is still the persisted one, mounted.
      const mounted = await exec(sim, "echo kept > /root/kept && cat /root/kept");
      assert.equal(mounted.stdout, "kept\n");
      const persisted = join(sim.dir, "volumes", "h0001", "persist", "root", "kept");
      assert.equal(await Deno.readTextFile(persisted), "kept\n");
      const status = JSON.parse((await sim.client(["--json", "status", "demo"])).stdout);
      assert.equal(status.state, "ready");
    } finally {
      await sim.close();
    }
  },
});

Deno.test({
  name: "a rootfs laid in place with /root -> / is never reported ready; exec is refused",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const sim = await startSim();
    try {
      const volume = join(sim.dir, "volumes", "h0002");
      await layRootfs(volume); // state.json says ready, as an older init would have left it
      await Deno.remove(join(volume, "rootfs", "root"), { recursive: true });
      await Deno.symlink("/", join(volume, "rootfs", "root"));
      const m = await sim.startMachine("h0002", { provisioned: false });
      await sim.writeConfig({ demo: vaultFor(sim, m) });
      const status = JSON.parse((await sim.client(["--json", "status", "demo"])).stdout);
      assert.equal(status.state, "failed", JSON.stringify(status));
      assert.match(status.reason, /mounts failed.*\/root is a symlink/);
      const r = await exec(sim, "echo lost > /root/x");
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /vault\.not_provisioned/);
    } finally {
      await sim.close();
    }
  },
});

/** Process ids whose command line contains `token`. */
async function processesWith(token: string): Promise<number[]> {
  const out: number[] = [];
  for await (const e of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    const cmd = await Deno.readTextFile(`/proc/${e.name}/cmdline`).catch(() => "");
    if (cmd.includes(token)) out.push(Number(e.name));
  }
  return out;
}

Deno.test({
  name: "init never reads /.fly-vault through a symlink to a host directory",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const sim = await startSim();
    const token = `fv-hostile-${crypto.randomUUID()}`;
    try {
      const hostDir = join(sim.dir, "host-decl");
      await Deno.mkdir(hostDir);
      await Deno.writeTextFile(
        join(hostDir, "image.json"),
        JSON.stringify({ Cmd: ["/bin/sh", "-c", `sleep 600 # ${token}`] }),
      );
      const m = await machine(sim, "h0003");
      const tar = await image(sim, "decllink", async (dir) => {
        await Deno.remove(join(dir, ".fly-vault"), { recursive: true }).catch(() => {});
        await Deno.symlink(hostDir, join(dir, ".fly-vault"));
      });
      await sim.writeConfig({ demo: vaultFor(sim, m, { rootfs: tar }) });
      const r = await sim.client(["connect", "demo", "--reprovision"]);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      // init starts the declared workload before it answers `done`: had it followed the
      // link, the host's declaration would be running now.
      assert.deepEqual(await processesWith(token), []);
      // Restarted init reads it again at boot: still nothing.
      await m.stop("SIGKILL");
      const again = await sim.startMachine("h0003");
      await sim.writeConfig({ demo: vaultFor(sim, again) });
      assert.equal((await exec(sim, "true")).code, 0);
      assert.deepEqual(await processesWith(token), []);
    } finally {
      for (const pid of await processesWith(token)) {
        try {
          Deno.kill(pid, "SIGKILL");
        } catch { /* gone */ }
      }
      await sim.close();
    }
  },
});

Deno.test({
  name: "a stalled rootfs_url: exec keeps working, the provision fails within the idle bound",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const sim = await startSim();
    const tar = await image(sim, "v2", async (dir) => {
      await Deno.writeTextFile(join(dir, "etc", "image-version"), "2\n");
    });
    const bytes = await Deno.readFile(tar);
    let sentSome!: () => void;
    const stalled = new Promise<void>((r) => sentSome = r);
    let cancelled!: () => void;
    const closed = new Promise<void>((r) => cancelled = r);
    // Ends the stalled bodies so the server can shut down whatever the test saw.
    const unstall: Array<() => void> = [];
    const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, () => {
      let sent = false;
      const body = new ReadableStream<Uint8Array>({
        pull(c) {
          if (!sent) {
            sent = true;
            c.enqueue(bytes.subarray(0, 4096));
            return;
          }
          sentSome();
          // The server stalls, keeping the connection open.
          return new Promise<void>((r) => unstall.push(() => (c.error(new Error("end")), r())));
        },
        cancel() {
          cancelled();
        },
      });
      return new Response(body, {
        headers: { "content-type": "application/gzip", "content-length": String(bytes.length) },
      });
    });
    try {
      const idleMs = 2000;
      const m = await machine(sim, "h0004", { FLY_VAULT_PROVISION_IDLE_MS: String(idleMs) });
      const url = `http://127.0.0.1:${server.addr.port}/stall.tar.gz`;
      await sim.writeConfig({ demo: vaultFor(sim, m, { rootfs_url: url }) });
      const started = performance.now();
      const provisioning = spawnClient(sim, ["--json", "connect", "demo", "--reprovision"]);
      await stalled;
      // While the download hangs, the old rootfs serves exec.
      const during = await exec(sim, "cat /etc/image-version");
      assert.equal(during.code, 0, during.stderr);
      assert.equal(during.stdout, "1\n");
      const r = await provisioning.result();
      const ms = performance.now() - started;
      assert.equal(r.code, 255, r.stdout + r.stderr);
      assert.match(r.stdout + r.stderr, /rootfs\.source_stalled/);
      assert.match(r.stdout + r.stderr, /no data for 2 s/);
      assert.ok(ms < idleMs + 15_000, `the stalled provision took ${Math.round(ms)} ms`);
      // init dropped the download.
      let t: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        closed,
        new Promise((_, rej) => t = setTimeout(() => rej(new Error("download kept")), 30_000)),
      ]);
      clearTimeout(t);
      assert.equal((await exec(sim, "cat /etc/image-version")).stdout, "1\n");
      const status = JSON.parse((await sim.client(["--json", "status", "demo"])).stdout);
      assert.equal(status.state, "ready");
    } finally {
      unstall.forEach((f) => f());
      await sim.close();
      await server.shutdown().catch(() => {});
    }
  },
});

/** SIGKILLs `pid` and every process below it (a crash of the whole client). */
function killTree(pid: number): void {
  const below = (p: number): number[] => {
    let kids: number[] = [];
    for (const t of Array.from(Deno.readDirSync(`/proc/${p}/task`))) {
      const text = (() => {
        try {
          return Deno.readTextFileSync(`/proc/${p}/task/${t.name}/children`);
        } catch {
          return "";
        }
      })();
      kids = kids.concat(text.trim().split(/\s+/).filter(Boolean).map(Number));
    }
    return kids.flatMap((k) => [k, ...below(k)]);
  };
  const all = [pid, ...below(pid)];
  for (const p of all) Deno.kill(p, "SIGSTOP"); // no new children while we look
  for (const p of [pid, ...below(pid)]) {
    try {
      Deno.kill(p, "SIGKILL");
    } catch { /* gone */ }
  }
}

/**
 * A client whose upload stalls mid-way: the tarball path is a fifo the test
 * feeds once whole (for hashing) and then only partly (for sending).
 */
async function stalledUpload(sim: Sim, m: LaunchedMachine, tar: string) {
  const fifo = join(sim.dir, `upload-${crypto.randomUUID().slice(0, 8)}.fifo`);
  const mk = await new Deno.Command("mkfifo", { args: [fifo] }).output();
  assert.ok(mk.success);
  await sim.writeConfig({ demo: vaultFor(sim, m, { rootfs: fifo }) });
  const bytes = await Deno.readFile(tar);
  const client = spawnClient(sim, ["--json", "connect", "demo", "--reprovision"]);
  const whole = await Deno.open(fifo, { write: true });
  await whole.write(bytes).then(async (n) => {
    let off = n;
    while (off < bytes.length) off += await whole.write(bytes.subarray(off));
  });
  whole.close();
  // Only once the client has read to the end: opening the fifo again before that would
  // let the second write join the first read.
  await client.waitLine((l) => l.includes('"sha256"'));
  const part = await Deno.open(fifo, { write: true });
  await part.write(bytes.subarray(0, 64 * 1024));
  // The vault has received part of it (the upload events are throttled; this one is not).
  await client.waitLine((l) => l.includes('"phase":"receive"'));
  return { client, part };
}

Deno.test({
  name:
    "a client that leaves mid-upload (Ctrl-C or killed) frees the vault for a new upload at once",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const sim = await startSim();
    try {
      const m = await machine(sim, "h0005");
      const v2 = await image(sim, "v2", async (dir) => {
        await Deno.writeTextFile(join(dir, "etc", "image-version"), "2\n");
      });
      const v3 = await image(sim, "v3", async (dir) => {
        await Deno.writeTextFile(join(dir, "etc", "image-version"), "3\n");
      });
      for (const [signal, next] of [["SIGINT", v3], ["SIGKILL", v2]] as const) {
        const { client, part } = await stalledUpload(sim, m, v2);
        // Mid-upload, the old rootfs serves.
        assert.equal((await exec(sim, "cat /etc/image-version")).code, 0);
        // The client may run as a launcher and a child: a crash takes all of them.
        if (signal === "SIGKILL") killTree(client.child.pid);
        else client.child.kill(signal);
        const left = await client.result();
        if (signal === "SIGINT") assert.equal(left.code, 130, left.stderr);
        part.close();
        await sim.writeConfig({ demo: vaultFor(sim, m, { rootfs: next }) });
        const started = performance.now();
        const r = await sim.client(["connect", "demo", "--reprovision"]);
        const ms = performance.now() - started;
        assert.equal(r.code, 0, `after ${signal}: ${r.stdout}${r.stderr}`);
        assert.ok(ms < 20_000, `after ${signal} the new upload took ${Math.round(ms)} ms`);
        const version = next === v3 ? "3\n" : "2\n";
        assert.equal((await exec(sim, "cat /etc/image-version")).stdout, version);
      }
    } finally {
      await sim.close();
    }
  },
});
