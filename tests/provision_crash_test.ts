/**
 * Crash safety: a process provisioning v2 over v1 is killed with SIGKILL
 * (with its tar, as a machine crash would) at several points; `recover`
 * must then leave either v1 or v2 complete — equal to GNU tar's extraction
 * of that image — and the files written in persisted /root and /home
 * byte-identical.
 */
import assert from "node:assert/strict";
import { openRootfsStore, recover, removeTree, tarExtractArgs } from "../src/rootfs/mod.ts";
import { diffManifests, manifest, sh, sha256, streamOf } from "../src/rootfs/testutil.ts";

const CHILD = new URL("./provision_crash_child.ts", import.meta.url).pathname;

async function makeImage(work: string, version: string, blobs: number): Promise<Uint8Array> {
  const dir = `${work}/img-${version}`;
  await Deno.mkdir(`${dir}/etc`, { recursive: true });
  await Deno.mkdir(`${dir}/root`, { mode: 0o700 });
  await Deno.mkdir(`${dir}/home/dev`, { recursive: true });
  await Deno.writeTextFile(`${dir}/etc/version`, version);
  await Deno.writeTextFile(`${dir}/root/.profile`, `# ${version}\n`);
  for (let i = 0; i < blobs; i++) {
    await Deno.mkdir(`${dir}/usr/share/blob${i % 10}`, { recursive: true });
    await Deno.writeFile(
      `${dir}/usr/share/blob${i % 10}/b${i}`,
      crypto.getRandomValues(new Uint8Array(32 * 1024)),
    );
  }
  const out = `${work}/${version}.tar.gz`;
  await sh("tar", ["--numeric-owner", "-czf", out, "-C", dir, "."]);
  const ref = `${work}/ref-${version}`;
  await Deno.mkdir(ref);
  await sh("tar", [...tarExtractArgs(ref).map((a) => (a === "-" ? out : a)), "-z"]);
  return await Deno.readFile(out);
}

/** Reads lines from a stream, resolving waiters on the first line that matches. */
function lineWatcher(stream: ReadableStream<Uint8Array>) {
  const waiters: { test: (l: string) => boolean; resolve: (l: string) => void }[] = [];
  const seen: string[] = [];
  (async () => {
    let buf = "";
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      buf += chunk;
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        seen.push(line);
        for (const w of waiters.splice(0)) {
          if (w.test(line)) w.resolve(line);
          else waiters.push(w);
        }
      }
    }
    for (const w of waiters.splice(0)) w.resolve("EOF");
  })();
  return {
    wait(test: (l: string) => boolean): Promise<string> {
      const hit = seen.find(test);
      if (hit) return Promise.resolve(hit);
      return new Promise((resolve) => waiters.push({ test, resolve }));
    },
  };
}

async function groupGone(pgid: number) {
  for (;;) {
    try {
      Deno.kill(-pgid, "SIGKILL");
    } catch {
      return; // ESRCH: every process of the group is gone
    }
    await new Promise((r) => setTimeout(r, 10));
  }
}

type Point =
  | "mid_upload"
  | "mid_extract"
  | "after_extract"
  | "before_swap"
  | "mid_swap"
  | "after_swap";

Deno.test("crash safety: SIGKILL at six points of a reprovision, then recover", async () => {
  const work = await Deno.makeTempDir({ prefix: "fv-crash-" });
  try {
    const v1 = await makeImage(work, "v1", 4);
    const v2 = await makeImage(work, "v2", 200);
    const refs = {
      v1: await manifest(`${work}/ref-v1`),
      v2: await manifest(`${work}/ref-v2`),
    };
    const points: [Point, "v1" | "v2"][] = [
      ["mid_upload", "v1"],
      ["mid_extract", "v1"],
      ["after_extract", "v1"],
      ["before_swap", "v1"],
      ["mid_swap", "v2"],
      ["after_swap", "v2"],
    ];
    for (const [point, expected] of points) {
      const data = `${work}/data-${point}`;
      const store = await openRootfsStore(data);
      await store.provision(streamOf(v1));
      const notes = crypto.getRandomValues(new Uint8Array(65_536));
      await Deno.writeFile(`${data}/persist/root/notes.bin`, notes);
      await Deno.mkdir(`${data}/persist/home/dev`, { recursive: true });
      await Deno.writeTextFile(`${data}/persist/home/dev/work.txt`, `work before ${point}`);

      const stopAt = point.startsWith("mid_u") || point === "mid_extract" ? "" : point;
      // setsid: the child and its tar form one process group, killed together like a crash.
      const child = new Deno.Command("setsid", {
        args: ["--wait", Deno.execPath(), "run", "-A", CHILD, data],
        stdin: "piped",
        stdout: "piped",
        stderr: "null",
        env: { FLY_VAULT_PROVISION_STOP_AT: stopAt },
      }).spawn();
      const lines = lineWatcher(child.stdout);
      // The provisioning process leads its own session: its pid is the group to kill.
      const pgid = Number((await lines.wait((l) => l.startsWith("ready "))).split(" ")[1]);
      const w = child.stdin.getWriter();
      const progressAt = (n: number) => (l: string) =>
        l.startsWith("progress extract ") && Number(l.split(" ")[2]) >= n;
      if (point === "mid_upload") {
        await w.write(v2.subarray(0, Math.floor(v2.length / 3)));
        await lines.wait(progressAt(1));
      } else if (point === "mid_extract") {
        const upTo = v2.length - 65536;
        await w.write(v2.subarray(0, upTo));
        await lines.wait(progressAt(upTo - 512 * 1024));
      } else {
        await w.write(v2);
        await w.close();
        const hit = await lines.wait((l) => l.startsWith("stop-point") || l.startsWith("done"));
        assert.equal(hit, `stop-point ${point}`);
      }
      Deno.kill(-pgid, "SIGKILL");
      await child.status;
      await groupGone(pgid);
      await w.abort().catch(() => {});

      const rec = await recover(data);
      const want = expected === "v1" ? v1 : v2;
      assert.equal(rec.state, "ready", `${point}: ${JSON.stringify(rec)}`);
      assert.equal(rec.sha256, sha256(want), `${point}: serves ${expected}`);
      const got = await manifest(`${data}/rootfs`);
      assert.deepEqual(diffManifests(refs[expected], got), [], `${point}: ${expected} complete`);
      assert.deepEqual(await Deno.readFile(`${data}/persist/root/notes.bin`), notes);
      assert.equal(
        await Deno.readTextFile(`${data}/persist/home/dev/work.txt`),
        `work before ${point}`,
      );
      const left = [...Deno.readDirSync(data)].map((e) => e.name).sort();
      assert.deepEqual(left, ["persist", "rootfs", "vault"], `${point}: no leftovers`);
      // And the machine can be provisioned again afterwards.
      const again = await openRootfsStore(data);
      await again.provision(streamOf(v2));
      await again.settled();
      assert.equal(again.state().sha256, sha256(v2));
    }
  } finally {
    await removeTree(work);
  }
});
