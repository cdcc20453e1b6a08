/**
 * Issue 14.3 for `cp`: a tenant racing a copy must never make init write or
 * read outside the rootfs. The real client copies through a real init under
 * flysim while a program inside the vault (started with `fly-vault exec`,
 * stopped by a file, bounded in count) keeps swapping directories for
 * symlinks to a host-only directory: the volume directory's parent, which
 * exists on the machine but not as such in the rootfs. Inside the rootfs the
 * same absolute path holds a "rootfs copy": what the tenant's link really
 * names. Every copy either succeeds inside the rootfs or fails cleanly, in
 * the vault's paths; nothing is ever created in the host directory and no
 * host file's bytes ever reach the client.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { type Sim, startSim, vaultFor } from "./harness.ts";

const ID = "m1403";
const HOST_SECRET = "HOST SECRET\n";
const ROOTFS_COPY = "rootfs copy\n";
const VAULT_DIR = "vault dir\n";
const FILES = Array.from({ length: 16 }, (_, i) => `s${String(i).padStart(2, "0")}`);

/** Waits (bounded) until `path` exists: the tenant's loop announces it started. */
async function waitFor(path: string, what: string, ended: () => string | null): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (!(await Deno.lstat(path).then(() => true, () => false))) {
    const early = ended();
    assert.equal(early, null, `${what} ended before it started: ${early}`);
    assert.ok(Date.now() < deadline, `timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A clean failure: the client's error line with a copy code, no host path, no crash. */
function assertCleanFailure(sim: Sim, out: { code: number; stderr: string }): string {
  assert.equal(out.code, 255, out.stderr);
  const code = /error\[(copy\.[a-z_]+)\]/.exec(out.stderr);
  assert.ok(code, out.stderr);
  assert.ok(!out.stderr.includes(sim.dir), `a host path leaked: ${out.stderr}`);
  return code[1];
}

/** Starts `script` in the vault through `fly-vault exec`; it must create `started` first. */
async function tenantLoop(sim: Sim, rootfs: string, name: string, script: string, arg: string) {
  const run = sim.client([
    "exec",
    "--argv",
    "-n",
    "demo",
    "--",
    "sh",
    "-c",
    `touch /race/${name}.started\n${script}`,
    "sh",
    arg,
  ]);
  let early: string | null = null;
  run.then((out) => early = `exit ${out.code}: ${out.stderr}`);
  await waitFor(join(rootfs, "race", `${name}.started`), `the ${name} loop`, () => early);
  return {
    async stop() {
      await Deno.writeTextFile(join(rootfs, "race", `${name}.stop`), "");
      const out = await run;
      assert.equal(out.code, 0, out.stderr);
      return out.stdout.trim();
    },
  };
}

Deno.test({
  name:
    "cp race: a tenant swapping directories for symlinks never makes init write or read outside the rootfs",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const sim = await startSim();
    const local = await Deno.makeTempDir({ prefix: "fv-cp-race-" });
    let watcher: Deno.FsWatcher | null = null;
    try {
      const m = await sim.startMachine(ID);
      await sim.writeConfig({ demo: vaultFor(sim, m) });
      const rootfs = join(sim.dir, "volumes", ID, "rootfs");
      // Not /root: that is the persistent volume mounted in init's own mount namespace.
      await Deno.mkdir(join(rootfs, "race"));
      // Host-only: next to the machine's volume, outside its rootfs.
      const host = join(sim.dir, "volumes", "host-only");
      await Deno.mkdir(host);
      await Deno.mkdir(rootfs + host, { recursive: true });
      for (const f of FILES) {
        await Deno.writeTextFile(join(host, f), HOST_SECRET);
        await Deno.writeTextFile(join(rootfs + host, f), ROOTFS_COPY);
      }
      const touched: string[] = [];
      watcher = Deno.watchFs(host, { recursive: true });
      const watching = (async () => {
        for await (const ev of watcher!) {
          if (ev.kind !== "access") touched.push(`${ev.kind} ${ev.paths.join(" ")}`);
        }
      })();

      // 1. Uploads into /race/dst/ while the tenant flips it between a directory and a link.
      // Other names than the host's files: a link followed inside the rootfs may land them there.
      const UPLOADS = FILES.map((f) => `u${f}`);
      for (const f of UPLOADS) await Deno.writeTextFile(join(local, f), `upload ${f}\n`);
      const flip = await tenantLoop(
        sim,
        rootfs,
        "flip",
        `i=0; mkdir -p /race/dst
while [ ! -e /race/flip.stop ] && [ $i -lt 20000 ]; do
  rm -rf /race/dst; ln -s "$1" /race/dst
  rm -f /race/dst; mkdir /race/dst
  i=$((i+1))
done
echo $i`,
        host,
      );
      const outcomes: string[] = [];
      for (let round = 0; round < 6; round++) {
        const out = await sim.client([
          "cp",
          ...UPLOADS.map((f) => join(local, f)),
          "demo:/race/dst/",
        ]);
        outcomes.push(out.code === 0 ? "ok" : assertCleanFailure(sim, out));
      }
      const flips = Number(await flip.stop());
      assert.ok(flips > 0, "the tenant loop ran");
      console.log(
        `uploads while /race/dst flips (${flips} flips): ${outcomes.join(" ")}`,
      );

      // 2. An upload of a tree while the tenant swaps the directory tar is filling in the
      // staging directory for a link: GNU tar then opens `tree/fNNN` through that link.
      const tree = join(local, "tree");
      await Deno.mkdir(tree);
      const chunk = new Uint8Array(32 * 1024).fill(0x61);
      for (let i = 0; i < 300; i++) {
        await Deno.writeFile(join(tree, `f${String(i).padStart(3, "0")}`), chunk);
      }
      await Deno.mkdir(join(rootfs, "race", "up"));
      const hijack = await tenantLoop(
        sim,
        rootfs,
        "hijack",
        `i=0; n=0
while [ ! -e /race/hijack.stop ] && [ $i -lt 3000000 ]; do
  for s in /race/up/.fly-vault-cp.*/tree; do
    if [ -d "$s" ] && [ ! -L "$s" ]; then mv "$s" "$s.moved" && ln -s "$1" "$s" && n=$((n+1)); fi
  done
  i=$((i+1))
done
echo $n`,
        host,
      );
      for (let round = 0; round < 3; round++) {
        const out = await sim.client(["cp", "-r", tree, "demo:/race/up/"]);
        outcomes.push(out.code === 0 ? "ok" : assertCleanFailure(sim, out));
        await Deno.remove(join(rootfs, "race", "up"), { recursive: true });
        await Deno.mkdir(join(rootfs, "race", "up"));
      }
      const hijacks = Number(await hijack.stop());
      assert.ok(hijacks > 0, "the tenant swapped a staging directory for a link");
      console.log(`uploads with ${hijacks} staging hijacks: ${outcomes.slice(6).join(" ")}`);

      // 3. Downloads of /race/src/sNN while the tenant swaps /race/src for a link.
      await Deno.mkdir(join(rootfs, "race", "src"));
      for (const f of FILES) await Deno.writeTextFile(join(rootfs, "race", "src", f), VAULT_DIR);
      // An absolute link as the tenant sees it names the rootfs's file, never the host's.
      await Deno.symlink(host, join(rootfs, "race", "abs"));
      const abs = await sim.client(["cp", `demo:/race/abs/${FILES[0]}`, join(local, "abs")]);
      assert.equal(abs.code, 0, abs.stderr);
      assert.equal(await Deno.readTextFile(join(local, "abs")), ROOTFS_COPY);
      const swap = await tenantLoop(
        sim,
        rootfs,
        "swap",
        `i=0; ln -s "$1" /race/srclink
while [ ! -e /race/swap.stop ] && [ $i -lt 20000 ]; do
  mv /race/src /race/srcdir; mv /race/srclink /race/src
  mv /race/src /race/srclink; mv /race/srcdir /race/src
  i=$((i+1))
done
echo $i`,
        host,
      );
      // One source a copy: a copy with any source missing at that instant fails as a whole.
      const seen = new Map<string, number>();
      for (let round = 0; round < 12; round++) {
        const f = FILES[round];
        const into = join(local, `down${round}`);
        await Deno.mkdir(into);
        const out = await sim.client(["cp", `demo:/race/src/${f}`, into]);
        if (out.code !== 0) {
          outcomes.push(assertCleanFailure(sim, out));
          continue;
        }
        outcomes.push("ok");
        const got = await Deno.readTextFile(join(into, f));
        seen.set(got, (seen.get(got) ?? 0) + 1);
        assert.notEqual(got, HOST_SECRET, `round ${round}: ${f} came from the machine's file`);
        assert.ok(got === VAULT_DIR || got === ROOTFS_COPY, `round ${round}: ${f}: ${got}`);
      }
      assert.ok(Number(await swap.stop()) > 0, "the tenant loop ran");
      console.log(
        `downloads while /race/src is swapped: ${outcomes.slice(9).join(" ")}`,
        Object.fromEntries(seen),
      );

      watcher.close();
      await watching;
      watcher = null;
      assert.deepEqual(touched, [], "init created or changed something in the host directory");
      const left: string[] = [];
      for await (const e of Deno.readDir(host)) left.push(e.name);
      assert.deepEqual(left.sort(), FILES);
      for (const f of FILES) assert.equal(await Deno.readTextFile(join(host, f)), HOST_SECRET);
    } finally {
      watcher?.close();
      await Deno.remove(local, { recursive: true }).catch(() => {});
      await sim.close();
    }
  },
});
