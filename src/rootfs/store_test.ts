import assert from "node:assert/strict";
import {
  encodeMessage,
  FrameReader,
  FrameWriter,
  ProvisionDone,
  UploadReply,
} from "../protocol/mod.ts";
import {
  openRootfsRuntime,
  openRootfsStore,
  provisionFromUrl,
  type ProvisionMessage,
  recover,
  removeTree,
  serveUpload,
  startWorkload,
} from "./mod.ts";
import { craft, gz, sh, sha256, streamOf, tarOf } from "./testutil.ts";

async function withData(fn: (data: string, work: string) => Promise<void>) {
  const work = await Deno.makeTempDir({ prefix: "fv-store-test-" });
  try {
    await fn(`${work}/data`, work);
  } finally {
    await removeTree(work); // unmounts first: never delete through a bind mount
  }
}

/** A small rootfs tar.gz written by GNU tar, `version` in /etc/version. */
async function image(work: string, version: string, extra?: (dir: string) => Promise<void>) {
  const dir = `${work}/img-${version}`;
  await Deno.mkdir(`${dir}/etc`, { recursive: true });
  await Deno.mkdir(`${dir}/root`, { mode: 0o700 });
  await Deno.mkdir(`${dir}/home/dev`, { recursive: true });
  await Deno.mkdir(`${dir}/usr/bin`, { recursive: true });
  await Deno.writeTextFile(`${dir}/etc/version`, version);
  await Deno.writeTextFile(`${dir}/root/.profile`, `# from image ${version}\n`);
  await Deno.writeTextFile(`${dir}/home/dev/.bashrc`, `# image ${version}\n`);
  await Deno.copyFile("/bin/sh", `${dir}/usr/bin/sh`).catch(() => {});
  await extra?.(dir);
  const out = `${work}/img-${version}.tar.gz`;
  await sh("tar", ["--numeric-owner", "--xattrs", "-czf", out, "-C", dir, "."]);
  return await Deno.readFile(out);
}

Deno.test("provision: unprovisioned → ready, persist seeded once, reprovision keeps it", async () => {
  await withData(async (data, work) => {
    const store = await openRootfsStore(data);
    assert.equal(store.state().state, "unprovisioned");
    const v1 = await image(work, "v1");
    const phases = new Set<string>();
    const r1 = await store.provision(streamOf(v1), {
      expectedSha256: sha256(v1),
      expectedSize: v1.length,
      onProgress: (p) => phases.add(p.phase),
    });
    assert.deepEqual(r1.seeded, ["/root", "/home"]);
    assert.deepEqual([...phases].sort(), ["extract", "swap", "verify"]);
    assert.equal(store.state().state, "ready");
    assert.equal(store.state().sha256, sha256(v1));
    assert.equal(await Deno.readTextFile(`${data}/rootfs/etc/version`), "v1");
    assert.equal(await Deno.readTextFile(`${data}/persist/root/.profile`), "# from image v1\n");
    const saved = JSON.parse(await Deno.readTextFile(`${data}/vault/state.json`));
    assert.equal(saved.state, "ready");

    await Deno.writeTextFile(`${data}/persist/root/notes.txt`, "mine");
    await Deno.writeTextFile(`${data}/persist/home/dev/work.txt`, "mine too");
    const v2 = await image(work, "v2");
    let swapped = false;
    const r2 = await store.provision(streamOf(v2), {
      beforeSwap: () => {
        swapped = true;
        return Promise.resolve();
      },
    });
    assert.ok(swapped);
    assert.deepEqual(r2.seeded, []);
    assert.equal(await Deno.readTextFile(`${data}/rootfs/etc/version`), "v2");
    assert.equal(await Deno.readTextFile(`${data}/persist/root/.profile`), "# from image v1\n");
    assert.equal(await Deno.readTextFile(`${data}/persist/root/notes.txt`), "mine");
    assert.equal(await Deno.readTextFile(`${data}/persist/home/dev/work.txt`), "mine too");
    await store.settled();
    const left = [...Deno.readDirSync(data)].map((e) => e.name).sort();
    assert.deepEqual(left, ["persist", "rootfs", "vault"]);
  });
});

Deno.test("a refused tarball leaves the old rootfs serving; with none, state is failed", async () => {
  await withData(async (data, work) => {
    const store = await openRootfsStore(data);
    const evil = gz(tarOf(craft({ name: "../evil" })));
    await assert.rejects(store.provision(streamOf(evil)), { code: "rootfs.dotdot" });
    assert.equal(store.state().state, "failed");
    assert.match(store.state().reason!, /rootfs\.dotdot/);
    const v1 = await image(work, "v1");
    await store.provision(streamOf(v1));
    await assert.rejects(store.provision(streamOf(evil)), { code: "rootfs.dotdot" });
    const s = store.state();
    assert.equal(s.state, "ready");
    assert.equal(s.sha256, sha256(v1));
    assert.equal(s.last_error?.code, "rootfs.dotdot");
    const status = store.status();
    assert.deepEqual(Object.keys(status).sort(), ["provisioned_at", "reason", "sha256", "state"]);
    assert.match(status.reason!, /last provision failed \(rootfs\.dotdot/);
    assert.equal(await Deno.readTextFile(`${data}/rootfs/etc/version`), "v1");
  });
});

Deno.test("a dropped upload leaves the state as it was, and the next provision succeeds", async () => {
  await withData(async (data, work) => {
    const store = await openRootfsStore(data);
    const v1 = await image(work, "v1", async (dir) => {
      await Deno.writeFile(`${dir}/usr/bin/blob`, crypto.getRandomValues(new Uint8Array(65536)));
    });
    let sent = 0;
    const dropping = new ReadableStream<Uint8Array>({
      pull(c) {
        if (sent >= v1.length / 2) return c.error(new Error("connection lost"));
        c.enqueue(v1.slice(sent, sent + 8192));
        sent += 8192;
      },
    });
    await assert.rejects(store.provision(dropping, { expectedSize: v1.length }), {
      code: "rootfs.source_failed",
    });
    assert.equal(store.state().state, "unprovisioned");
    const short = streamOf(v1.subarray(0, 1000));
    await assert.rejects(store.provision(short, { expectedSize: v1.length }), {
      code: "rootfs.incomplete",
    });
    assert.equal(store.state().state, "unprovisioned");
    await store.provision(streamOf(v1), { expectedSize: v1.length });
    assert.equal(store.state().state, "ready");
  });
});

Deno.test("recover: staging leftovers removed, interrupted provision rolled back", async () => {
  await withData(async (data, work) => {
    const store = await openRootfsStore(data);
    await store.provision(streamOf(await image(work, "v1")));
    const before = store.state();
    // What a crash mid-extract leaves behind:
    await Deno.mkdir(`${data}/rootfs.staging-x/etc`, { recursive: true });
    await Deno.writeTextFile(
      `${data}/vault/state.json`,
      JSON.stringify({ state: "provisioning", previous: before }),
    );
    const rec = await recover(data);
    assert.equal(rec.state, "ready");
    assert.equal(rec.sha256, before.sha256);
    assert.equal(rec.last_error?.code, "rootfs.interrupted");
    assert.equal(await Deno.lstat(`${data}/rootfs.staging-x`).catch(() => null), null);
    assert.equal(await Deno.readTextFile(`${data}/rootfs/etc/version`), "v1");
  });
});

Deno.test("recover: a rootfs laid out without a state record counts as ready", async () => {
  await withData(async (data) => {
    await Deno.mkdir(`${data}/rootfs/usr/bin`, { recursive: true });
    assert.equal((await recover(data)).state, "ready");
    const saved = JSON.parse(await Deno.readTextFile(`${data}/vault/state.json`));
    assert.equal(saved.state, "ready");
  });
});

Deno.test("recover: a committed swap is completed", async () => {
  await withData(async (data, work) => {
    const store = await openRootfsStore(data);
    await store.provision(streamOf(await image(work, "v1")));
    // Crash between the two renames: old moved away, complete staging not yet in place.
    await Deno.mkdir(`${data}/rootfs.staging-y/etc`, { recursive: true });
    await Deno.writeTextFile(`${data}/rootfs.staging-y/etc/version`, "v2");
    await Deno.rename(`${data}/rootfs`, `${data}/rootfs.old-y`);
    const swap = { id: "y", sha256: "ab".repeat(32), bytes: 1, entries: 1 };
    await Deno.writeTextFile(
      `${data}/vault/state.json`,
      JSON.stringify({ state: "provisioning", swap, previous: store.state() }),
    );
    const rec = await recover(data);
    assert.equal(rec.state, "ready");
    assert.equal(rec.sha256, swap.sha256);
    assert.equal(await Deno.readTextFile(`${data}/rootfs/etc/version`), "v2");
    const left = [...Deno.readDirSync(data)].map((e) => e.name).sort();
    assert.deepEqual(left, ["persist", "rootfs", "vault"]);
  });
});

Deno.test("mounts: persist, proc, sys, dev, pts, resolv.conf; removal never reaches persist", async () => {
  await withData(async (data, work) => {
    const store = await openRootfsStore(data);
    await store.provision(streamOf(await image(work, "v1")));
    await Deno.writeTextFile(`${data}/persist/root/keep`, "keep");
    await store.prepareMounts();
    assert.equal(await Deno.readTextFile(`${data}/rootfs/root/keep`), "keep");
    assert.ok((await Deno.lstat(`${data}/rootfs/proc/self`)).isSymlink);
    assert.ok((await Deno.stat(`${data}/rootfs/sys/kernel`)).isDirectory);
    const nul = await Deno.stat(`${data}/rootfs/dev/null`);
    assert.equal(nul.isCharDevice, true);
    assert.equal(
      await Deno.readTextFile(`${data}/rootfs/etc/resolv.conf`),
      await Deno.readTextFile("/etc/resolv.conf"),
    );
    // Read-only: the tenant cannot rewrite the machine's resolv.conf through it.
    await assert.rejects(Deno.writeTextFile(`${data}/rootfs/etc/resolv.conf`, "x"));
    // A reprovision with mounts up moves them to the new rootfs and never deletes persist.
    await store.provision(streamOf(await image(work, "v2")));
    assert.equal(store.mounted(), true);
    assert.equal(await Deno.readTextFile(`${data}/rootfs/root/keep`), "keep");
    assert.equal(await Deno.readTextFile(`${data}/persist/root/keep`), "keep");
    await store.releaseMounts();
    await store.settled();
    assert.equal(await Deno.lstat(`${data}/rootfs/root/keep`).catch(() => null), null);
  });
});

Deno.test("mounts: a symlinked /home in the image is refused before the swap, entry named", async () => {
  await withData(async (data, work) => {
    const store = await openRootfsStore(data);
    await store.provision(streamOf(await image(work, "v1")));
    await Deno.mkdir(`${work}/victim`);
    const img = await image(work, "v2", async (dir) => {
      await Deno.remove(`${dir}/home`, { recursive: true });
      await Deno.symlink(`${work}/victim`, `${dir}/home`);
    });
    await assert.rejects(store.provision(streamOf(img)), (err: Error & { code?: string }) => {
      assert.equal(err.code, "rootfs.bad_mount_point");
      assert.match(err.message, /^\/home in the image is a symlink/);
      return true;
    });
    assert.equal(await Deno.readTextFile(`${data}/rootfs/etc/version`), "v1", "v1 serves");
    assert.equal(store.status().state, "ready");
    assert.deepEqual([...Deno.readDirSync(`${work}/victim`)], []);
    assert.deepEqual([...Deno.readDirSync(data)].filter((e) => e.name.includes(".")), []);
  });
});

Deno.test("mounts: /root -> / refused; /proc, /sys, /dev of the wrong type replaced, noted", async () => {
  await withData(async (data, work) => {
    const store = await openRootfsStore(data);
    const bad = await image(work, "bad", async (dir) => {
      await Deno.remove(`${dir}/root`, { recursive: true });
      await Deno.symlink("/", `${dir}/root`);
    });
    await assert.rejects(store.provision(streamOf(bad)), {
      code: "rootfs.bad_mount_point",
      message: /^\/root in the image is a symlink \(-> \/\)/,
    });
    assert.equal(store.status().state, "failed");
    assert.match(store.status().reason ?? "", /rootfs\.bad_mount_point: \/root in the image/);
    const odd = await image(work, "odd", async (dir) => {
      await Deno.writeTextFile(`${dir}/sys`, "not a directory");
      await Deno.symlink("/etc", `${dir}/proc`);
      await Deno.symlink("/tmp", `${dir}/dev`);
    });
    const r = await store.provision(streamOf(odd));
    for (const p of ["/proc", "/sys", "/dev"]) {
      assert.ok(r.notes.some((n) => n.startsWith(`${p} in the image was `)), r.notes.join("\n"));
      const st = await Deno.lstat(`${data}/rootfs${p}`);
      assert.ok(st.isDirectory, p);
    }
    await store.prepareMounts();
    assert.equal(store.status().state, "ready");
    await store.releaseMounts();
  });
});

Deno.test("mounts: a rootfs laid in place with a symlinked /root is not `ready`", async () => {
  await withData(async (data, work) => {
    const store = await openRootfsStore(data);
    await store.provision(streamOf(await image(work, "v1")));
    // Laid out by other means (an operator, an older init): verification never saw it.
    await Deno.remove(`${data}/rootfs/root`, { recursive: true });
    await Deno.symlink("/", `${data}/rootfs/root`);
    await assert.rejects(store.prepareMounts(), { code: "rootfs.unsafe_mount_point" });
    assert.equal(store.mounted(), false);
    const st = store.status();
    assert.equal(st.state, "failed");
    assert.match(st.reason ?? "", /\/root is a symlink/);
  });
});

/** A source that sends `first` and then nothing, until cancelled. */
function stalling(first: Uint8Array) {
  let cancelled!: () => void;
  const wasCancelled = new Promise<void>((r) => cancelled = r);
  let sent = false;
  const stream = new ReadableStream<Uint8Array>({
    pull(c) {
      if (!sent) {
        sent = true;
        c.enqueue(first);
      }
      return new Promise(() => {}); // stall
    },
    cancel() {
      cancelled();
    },
  });
  return { stream, wasCancelled };
}

Deno.test("provision: a stalled source fails after the idle bound; the old rootfs serves meanwhile", async () => {
  await withData(async (data, work) => {
    const store = await openRootfsStore(data);
    await store.provision(streamOf(await image(work, "v1")));
    const v2 = await image(work, "v2");
    const { stream, wasCancelled } = stalling(v2.subarray(0, 1000));
    const started = performance.now();
    let extracting!: () => void;
    const sawExtract = new Promise<void>((r) => extracting = r);
    const running = store.provision(stream, {
      idleMs: 300,
      progressIntervalMs: 0,
      onProgress: (p) => p.phase === "extract" && extracting(),
    });
    await sawExtract;
    const during = store.status();
    assert.equal(during.state, "ready", "the previous rootfs serves during a provision");
    assert.match(during.reason ?? "", /being provisioned/);
    await assert.rejects(running, { code: "rootfs.source_stalled" });
    const ms = performance.now() - started;
    assert.ok(ms >= 300 && ms < 5000, `failed after ${ms} ms`);
    await wasCancelled;
    assert.equal(store.state().state, "ready");
    assert.equal(store.state().last_error?.code, "rootfs.source_stalled");
    assert.equal(await Deno.readTextFile(`${data}/rootfs/etc/version`), "v1");
    assert.deepEqual([...Deno.readDirSync(data)].filter((e) => e.name.includes(".")), []);
  });
});

Deno.test("provision: a new provision supersedes an abandoned one at once", async () => {
  await withData(async (data, work) => {
    const store = await openRootfsStore(data);
    const v1 = await image(work, "v1");
    const { stream } = stalling(v1.subarray(0, 1000));
    let extracting!: () => void;
    const sawExtract = new Promise<void>((r) => extracting = r);
    const abandoned = store.provision(stream, {
      progressIntervalMs: 0,
      onProgress: (p) => p.phase === "extract" && extracting(),
    });
    const refused = assert.rejects(abandoned, { code: "rootfs.superseded" });
    await sawExtract;
    const started = performance.now();
    await store.provision(streamOf(await image(work, "v2")));
    await refused;
    assert.ok(performance.now() - started < 10_000);
    assert.equal(store.status().state, "ready");
    assert.equal(await Deno.readTextFile(`${data}/rootfs/etc/version`), "v2");
  });
});

Deno.test("workload: declared command runs chrooted, restarts when it dies, stops", async () => {
  await withData(async (data, work) => {
    const store = await openRootfsStore(data);
    const img = await workloadImage(work, "v1", {
      Entrypoint: ["/usr/bin/sh", "-c"],
      Cmd: ['echo "run $GREETING $(pwd)" >> /root/runs; exit 3'],
      Env: ["GREETING=hello"],
      WorkingDir: "/etc",
    });
    await store.provision(streamOf(img));
    await store.prepareMounts();
    const exits: number[] = [];
    let twice: () => void;
    const ranTwice = new Promise<void>((r) => twice = r);
    const w = await startWorkload(store.rootfsDir, {
      backoffMs: 10,
      onEvent: (e) => {
        if (e.type === "exit") exits.push(e.code);
        if (exits.length === 2) twice();
      },
    });
    assert.ok(w);
    await ranTwice;
    await w.stop();
    assert.deepEqual(exits.slice(0, 2), [3, 3]);
    const runs = await Deno.readTextFile(`${data}/persist/root/runs`);
    assert.match(runs, /^run hello \/etc\nrun hello \/etc\n/);
  });
});

/** An image with the host's sh, env and sleep (and their libraries) and a declared workload. */
function workloadImage(work: string, version: string, decl: Record<string, unknown>) {
  return image(work, version, async (dir) => {
    const bins = ["/usr/bin/env", "/bin/sh", "/usr/bin/sleep"];
    const libs = (await Promise.all(bins.map(libsOf))).flat();
    for (const p of new Set([...bins.filter((b) => b !== "/bin/sh"), ...libs])) {
      const target = `${dir}${p.startsWith("/usr/") ? p : `/usr${p}`}`;
      await Deno.mkdir(target.slice(0, target.lastIndexOf("/")), { recursive: true });
      await Deno.copyFile(p, target);
      await Deno.chmod(target, 0o755);
    }
    for (const l of ["lib", "lib64"]) await Deno.symlink(`usr/${l}`, `${dir}/${l}`);
    await Deno.mkdir(`${dir}/.fly-vault`);
    await Deno.writeTextFile(`${dir}/.fly-vault/image.json`, JSON.stringify(decl));
  });
}

/** Resolves when `file` contains `text` (watching the directory, no polling). */
async function fileContains(file: string, text: string): Promise<void> {
  const dir = file.slice(0, file.lastIndexOf("/"));
  const watcher = Deno.watchFs(dir);
  try {
    const has = () => Deno.readTextFile(file).then((t) => t.includes(text), () => false);
    if (await has()) return;
    for await (const _ of watcher) if (await has()) return;
  } finally {
    watcher.close();
  }
}

Deno.test("runtime: boot mounts and starts the workload; a reprovision restarts it in the new rootfs", async () => {
  await withData(async (data, work) => {
    const decl = (v: string) => ({
      Entrypoint: ["/usr/bin/sh", "-c", `echo ${v} >> /root/runs; exec /usr/bin/sleep 1000`],
    });
    const v1 = await workloadImage(work, "v1", decl("v1"));
    const v2 = await workloadImage(work, "v2", decl("v2"));
    let sessionsEnded = 0;
    const rt = await openRootfsRuntime(data, {
      beforeSwap: () => Promise.resolve(void sessionsEnded++),
      workloadOptions: { stopTimeoutMs: 2000 },
    });
    assert.deepEqual(await rt.boot(), []);
    assert.equal(rt.workload(), null, "nothing to run before the first provision");
    await rt.store.provision(streamOf(v1), rt.ctx);
    await fileContains(`${data}/persist/root/runs`, "v1");
    const first = rt.workload();
    assert.ok(first?.pid());
    await rt.store.provision(streamOf(v2), rt.ctx);
    await fileContains(`${data}/persist/root/runs`, "v2");
    assert.equal(sessionsEnded, 2);
    assert.equal(first?.pid(), null, "the old workload was stopped");
    assert.equal(await Deno.readTextFile(`${data}/persist/root/runs`), "v1\nv2\n");
    await rt.shutdown();
    await rt.store.settled();
    assert.equal(rt.workload(), null);
    assert.equal(rt.store.mounted(), false);
    // A restart of init boots straight into the workload.
    const again = await openRootfsRuntime(data);
    await again.boot();
    await fileContains(`${data}/persist/root/runs`, "v2\nv2");
    await again.shutdown();
  });
});

async function libsOf(bin: string): Promise<string[]> {
  const out = await sh("ldd", [bin]).catch(() => "");
  return [...out.matchAll(/(\/[^\s]+)/g)].map((m) => m[1]).filter((p) => !p.startsWith("/proc"));
}

/** A bidirectional in-memory stream pair: what one side writes the other reads. */
function pipePair() {
  const a = new TransformStream<Uint8Array, Uint8Array>();
  const b = new TransformStream<Uint8Array, Uint8Array>();
  return {
    server: { readable: a.readable, writable: b.writable },
    client: { readable: b.readable, writable: a.writable },
  };
}

Deno.test("serveUpload: header, body, progress frames, done; a bad upload gets an error", async () => {
  await withData(async (data, work) => {
    const store = await openRootfsStore(data);
    const v1 = await image(work, "v1");
    const { server, client } = pipePair();
    const served = serveUpload(new FrameReader(server.readable), new FrameWriter(server.writable), {
      store,
      progressIntervalMs: 0,
    });
    const w = client.writable.getWriter();
    await w.write(encodeMessage({ type: "upload", size: v1.length, sha256: sha256(v1) }));
    const writing = (async () => {
      for (let o = 0; o < v1.length; o += 1000) await w.write(v1.slice(o, o + 1000));
      await w.close();
    })();
    const r = new FrameReader(client.readable);
    const phases: string[] = [];
    let done: ProvisionDone | undefined;
    for (;;) {
      const m = await r.message(UploadReply).catch(() => null);
      if (!m) break;
      if (m.type === "progress") phases.push(m.phase);
      else if (m.type === "provision_done") done = m;
      else assert.fail(`error: ${m.message}`);
    }
    await writing;
    await served;
    assert.equal(done?.sha256, sha256(v1));
    assert.ok(phases.includes("receive") && phases.includes("swap"), phases.join());
    assert.equal(store.state().state, "ready");

    const bad = pipePair();
    const served2 = serveUpload(
      new FrameReader(bad.server.readable),
      new FrameWriter(bad.server.writable),
      { store },
    );
    const w2 = bad.client.writable.getWriter();
    await w2.write(encodeMessage({ type: "upload", size: 4, sha256: "0".repeat(64) }));
    await w2.write(new Uint8Array([1, 2, 3, 4]));
    await w2.close().catch(() => {});
    const r2 = new FrameReader(bad.client.readable);
    const reply = await r2.message(UploadReply);
    assert.equal(reply.type, "error");
    assert.equal(reply.type === "error" && reply.code, "rootfs.not_gzip");
    await served2;
    assert.equal(store.state().state, "ready");
  });
});

Deno.test("provisionFromUrl: http on loopback works, plain http elsewhere is refused", async () => {
  await withData(async (data, work) => {
    const store = await openRootfsStore(data);
    const v1 = await image(work, "v1");
    const ac = new AbortController();
    const server = Deno.serve(
      { hostname: "127.0.0.1", port: 0, signal: ac.signal, onListen: () => {} },
      (req) =>
        new URL(req.url).pathname === "/redirect"
          ? Response.redirect("http://example.com/x.tar.gz", 302)
          : new Response(v1),
    );
    try {
      const port = server.addr.port;
      const msgs: ProvisionMessage[] = [];
      const send = (m: ProvisionMessage) => (msgs.push(m), Promise.resolve());
      await provisionFromUrl(`http://127.0.0.1:${port}/v1.tar.gz`, sha256(v1), { store }, send);
      assert.equal(msgs.at(-1)?.type, "provision_done", JSON.stringify(msgs.at(-1)));
      assert.ok(msgs.some((m) => m.type === "progress" && m.phase === "download"));
      msgs.length = 0;
      await provisionFromUrl("http://example.com/x.tar.gz", undefined, { store }, send);
      assert.deepEqual(msgs.map((m) => m.type === "error" && m.code), ["rootfs.bad_url"]);
      msgs.length = 0;
      await provisionFromUrl(`http://127.0.0.1:${port}/redirect`, undefined, { store }, send);
      assert.deepEqual(msgs.map((m) => m.type === "error" && m.code), ["rootfs.bad_url"]);
      msgs.length = 0;
      await provisionFromUrl(`http://127.0.0.1:${port}/v1.tar.gz`, "0".repeat(64), { store }, send);
      assert.deepEqual(
        msgs.map((m) => m.type === "error" && m.code).at(-1),
        "rootfs.sha256_mismatch",
      );
      assert.equal(store.state().state, "ready");
    } finally {
      ac.abort();
      await server.finished;
    }
  });
});
