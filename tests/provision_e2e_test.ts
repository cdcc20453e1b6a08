/**
 * Issue 3 end to end: the real client provisions a real init over QUIC —
 * first provision on connect, reprovision keeping /root and /home, processes
 * in the old rootfs ended by the swap, and a hostile tarball refused while
 * the previous rootfs keeps serving.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { hostRootfsTemplate, startSim, vaultFor } from "./harness.ts";

async function tarball(dir: string, path: string, extraArgs: string[] = []): Promise<void> {
  const out = await new Deno.Command("tar", {
    args: ["-czf", path, "--numeric-owner", "-C", dir, ".", ...extraArgs],
    stderr: "piped",
  }).output();
  if (!out.success) throw new Error(new TextDecoder().decode(out.stderr));
}

Deno.test({
  name: "provision on connect, reprovision keeps /root and /home, hostile tarballs change nothing",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const sim = await startSim();
    try {
      const work = join(sim.dir, "images");
      const v1 = join(work, "v1");
      await Deno.mkdir(v1, { recursive: true });
      await new Deno.Command("cp", { args: ["-a", `${await hostRootfsTemplate()}/.`, v1] })
        .output();
      await Deno.writeTextFile(join(v1, "etc", "image-version"), "1\n");
      const v1tar = join(work, "v1.tar.gz");
      await tarball(v1, v1tar);

      const m = await sim.startMachine("p0001", { provisioned: false });
      await sim.writeConfig({ demo: vaultFor(sim, m, { rootfs: v1tar }) });

      const first = await sim.client(["--json", "connect", "demo"]);
      assert.equal(first.code, 0, first.stderr);
      const events = first.stdout.trim().split("\n").map((l) => JSON.parse(l));
      const done = events.find((e) => e.event === "done");
      assert.ok(done, first.stdout);
      assert.ok(done.entries > 50);
      assert.ok(events.some((e) => e.event === "upload"), "upload progress was reported");

      const exec = (script: string) =>
        sim.client(["exec", "--argv", "-n", "demo", "--", "sh", "-c", script]);
      assert.equal((await exec("cat /etc/image-version")).stdout, "1\n");
      const state =
        "printf 'kept\\000bytes' > /root/notes; mkdir -p /home/dev; echo hi > /home/dev/x";
      assert.equal((await exec(state)).code, 0);

      // v2: a changed image; /root and /home in it must not win over the persisted ones.
      const v2 = join(work, "v2");
      await new Deno.Command("cp", { args: ["-a", v1, v2] }).output();
      await Deno.writeTextFile(join(v2, "etc", "image-version"), "2\n");
      await Deno.writeTextFile(join(v2, "root", "notes"), "from the image\n");
      const v2tar = join(work, "v2.tar.gz");
      await tarball(v2, v2tar);
      await sim.writeConfig({ demo: vaultFor(sim, m, { rootfs: v2tar }) });

      // A command still running in the old rootfs when the swap comes.
      const running = sim.client(["exec", "-n", "demo", "--", "sleep", "300"]);
      const again = await sim.client(["connect", "demo", "--reprovision"]);
      assert.equal(again.code, 0, again.stderr);
      assert.match(again.stdout + again.stderr, /provisioned: \d+ entries/);
      const ended = await running;
      assert.notEqual(ended.code, 0, "the old rootfs's process was ended by the swap");

      assert.equal((await exec("cat /etc/image-version")).stdout, "2\n");
      const notes = await exec("cat /root/notes");
      assert.equal(notes.stdout, "kept\0bytes", "/root kept byte for byte");
      assert.equal((await exec("cat /home/dev/x")).stdout, "hi\n");

      // Hostile: a member that climbs out with `..` — refused, v2 keeps serving.
      const evil = join(work, "evil");
      await Deno.mkdir(join(evil, "etc"), { recursive: true });
      await Deno.writeTextFile(join(evil, "etc", "x"), "x");
      const eviltar = join(work, "evil.tar.gz");
      await tarball(evil, eviltar, ["--transform", "s,^\\./etc/x,../../escaped,"]);
      await sim.writeConfig({ demo: vaultFor(sim, m, { rootfs: eviltar }) });
      const refused = await sim.client(["connect", "demo", "--reprovision"]);
      assert.equal(refused.code, 255, refused.stdout + refused.stderr);
      assert.match(refused.stdout + refused.stderr, /rootfs\.dotdot/);
      assert.equal((await exec("cat /etc/image-version")).stdout, "2\n");

      // Not gzip at all.
      const junk = join(work, "junk.tar.gz");
      await Deno.writeTextFile(junk, "this is not a tarball\n".repeat(100));
      await sim.writeConfig({ demo: vaultFor(sim, m, { rootfs: junk }) });
      const notGzip = await sim.client(["connect", "demo", "--reprovision"]);
      assert.equal(notGzip.code, 255);
      assert.match(notGzip.stdout + notGzip.stderr, /rootfs\.not_gzip/);
      assert.equal((await exec("cat /etc/image-version")).stdout, "2\n");
      const status = await sim.client(["--json", "status", "demo"]);
      assert.equal(JSON.parse(status.stdout).state, "ready");
    } finally {
      await sim.close();
    }
  },
});

Deno.test({
  name: "rootfs_url: the machine downloads the tarball itself, with progress, sha256 recorded",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const sim = await startSim();
    const tar = join(sim.dir, "url-rootfs.tar.gz");
    await tarball(await hostRootfsTemplate(), tar);
    const bytes = await Deno.readFile(tar);
    let requests = 0;
    const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, () => {
      requests++;
      return new Response(bytes, { headers: { "content-type": "application/gzip" } });
    });
    try {
      const m = await sim.startMachine("u0001", { provisioned: false });
      const url = `http://127.0.0.1:${server.addr.port}/dev-env.tar.gz`;
      await sim.writeConfig({ demo: vaultFor(sim, m, { rootfs_url: url }) });
      const r = await sim.client(["--json", "connect", "demo"]);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      const events = r.stdout.trim().split("\n").map((l) => JSON.parse(l));
      assert.ok(events.some((e) => e.event === "progress" && e.phase === "download"), r.stdout);
      const done = events.find((e) => e.event === "done");
      const digest = Array.from(
        new Uint8Array(await crypto.subtle.digest("SHA-256", bytes)),
        (b) => b.toString(16).padStart(2, "0"),
      ).join("");
      assert.equal(done?.sha256, digest);
      assert.equal(requests, 1);
      const status = JSON.parse((await sim.client(["--json", "status", "demo"])).stdout);
      assert.equal(status.state, "ready");
      assert.equal(status.sha256, digest);
      const ok = await sim.client(["exec", "-n", "demo", "--", "uname", "-s"]);
      assert.equal(ok.stdout, "Linux\n");

      // A URL nobody answers any more: a clear error, and the vault keeps its rootfs.
      await sim.writeConfig({
        demo: vaultFor(sim, m, { rootfs_url: `http://127.0.0.1:${server.addr.port}/missing` }),
      });
      await server.shutdown();
      const gone = await sim.client(["connect", "demo", "--reprovision"]);
      assert.equal(gone.code, 255, gone.stdout + gone.stderr);
      assert.match(gone.stderr, /error\[/);
      assert.equal((await sim.client(["exec", "-n", "demo", "--", "true"])).code, 0);
    } finally {
      await server.shutdown().catch(() => {});
      await sim.close();
    }
  },
});
