import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { gzipSync } from "node:zlib";
import { DEFAULT_LIMITS, extractRootfs, removeTree } from "../rootfs/mod.ts";
import { craft, diffManifests, manifest, sh, tarOf } from "../rootfs/testutil.ts";
import { Writable } from "node:stream";
import { buildReporter, buildRootfs } from "./mod.ts";

const enc = new TextEncoder();

async function withTemp(fn: (dir: string) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "fv-build-test-" });
  try {
    await fn(dir);
  } finally {
    await removeTree(dir);
  }
}

async function extract(tarball: string, into: string) {
  const f = await Deno.open(tarball);
  return await extractRootfs(f.readable, { stagingDir: into, limits: DEFAULT_LIMITS });
}

Deno.test("build from a directory: GNU tar keeps setuid, owners, hardlinks, xattrs", async () => {
  await withTemp(async (dir) => {
    const src = `${dir}/src`;
    await Deno.mkdir(`${src}/usr/bin`, { recursive: true });
    await Deno.writeTextFile(`${src}/usr/bin/x`, "x");
    await Deno.chown(`${src}/usr/bin/x`, 0, 42);
    await Deno.chmod(`${src}/usr/bin/x`, 0o4755);
    await Deno.link(`${src}/usr/bin/x`, `${src}/usr/bin/y`);
    await Deno.symlink("/usr/bin/x", `${src}/usr/bin/z`);
    await sh("setfattr", ["-n", "user.k", "-v", "v", `${src}/usr/bin/x`]);
    let text = "";
    const out = new Writable({
      write(chunk, _enc, cb) {
        text += String(chunk);
        cb();
      },
    });
    const report = buildReporter({ json: false, tty: false, out });
    const r = await buildRootfs({
      source: src,
      output: `${dir}/out/rootfs.tar.gz`,
      onProgress: report.onProgress,
    });
    report.done(r);
    assert.match(text, /^wrote .*rootfs\.tar\.gz .*\nsha256 [0-9a-f]{64}\n/m);
    assert.equal(r.kind, "dir");
    const bytes = await Deno.readFile(r.output);
    assert.equal(r.sha256, createHash("sha256").update(bytes).digest("hex"));
    await extract(r.output, `${dir}/x`);
    assert.deepEqual(diffManifests(await manifest(src), await manifest(`${dir}/x`)), []);
  });
});

/** Writes an OCI blob, returning its descriptor. */
async function blob(layout: string, bytes: Uint8Array, mediaType: string) {
  const hex = createHash("sha256").update(bytes).digest("hex");
  await Deno.mkdir(`${layout}/blobs/sha256`, { recursive: true });
  await Deno.writeFile(`${layout}/blobs/sha256/${hex}`, bytes);
  return { mediaType, digest: `sha256:${hex}`, size: bytes.length };
}

const CONFIG = {
  architecture: "amd64",
  os: "linux",
  config: {
    Entrypoint: ["/bin/app"],
    Cmd: ["--serve"],
    Env: ["PATH=/usr/bin:/bin", "MODE=prod"],
    WorkingDir: "/srv",
  },
  rootfs: { type: "layers", diff_ids: [] },
};

function layers() {
  const l1 = tarOf(
    craft({ name: "etc/", type: "5", mode: 0o755 }),
    craft({ name: "etc/keep", data: enc.encode("keep v1") }),
    craft({ name: "etc/gone", data: enc.encode("whited out") }),
    craft({ name: "etc/replaced", data: enc.encode("old") }),
    craft({ name: "opaque/", type: "5", mode: 0o755 }),
    craft({ name: "opaque/old", data: enc.encode("hidden by opq") }),
    craft({ name: "dir-then-file/", type: "5", mode: 0o755 }),
    craft({ name: "dir-then-file/child", data: enc.encode("hidden by a file") }),
    craft({ name: "bin/", type: "5", mode: 0o755 }),
    craft({ name: "bin/app", data: enc.encode("#!/bin/sh\n"), mode: 0o755 }),
  );
  const l2 = tarOf(
    craft({ name: "etc/.wh.gone" }),
    craft({ name: "etc/replaced", data: enc.encode("new") }),
    craft({ name: "opaque/.wh..wh..opq" }),
    craft({ name: "opaque/new", data: enc.encode("fresh") }),
    craft({ name: "dir-then-file", data: enc.encode("now a file") }),
  );
  return [l1, l2];
}

async function expectMerged(r: { output: string; workload?: string[] }, dir: string) {
  const x = `${dir}/x-${crypto.randomUUID().slice(0, 4)}`;
  await extract(r.output, x);
  assert.equal(await Deno.readTextFile(`${x}/etc/keep`), "keep v1");
  assert.equal(await Deno.readTextFile(`${x}/etc/replaced`), "new");
  assert.equal(await Deno.lstat(`${x}/etc/gone`).catch(() => null), null);
  assert.equal(await Deno.lstat(`${x}/etc/.wh.gone`).catch(() => null), null);
  assert.deepEqual([...Deno.readDirSync(`${x}/opaque`)].map((e) => e.name), ["new"]);
  assert.equal(await Deno.readTextFile(`${x}/dir-then-file`), "now a file");
  const decl = JSON.parse(await Deno.readTextFile(`${x}/.fly-vault/image.json`));
  assert.deepEqual(decl, CONFIG.config);
  assert.deepEqual(r.workload, ["/bin/app", "--serve"]);
}

Deno.test("build from an OCI layout (gzip and plain layers): whiteouts, opaque dirs, config", async () => {
  await withTemp(async (dir) => {
    const layout = `${dir}/oci`;
    const [l1, l2] = layers();
    const d1 = await blob(
      layout,
      new Uint8Array(gzipSync(l1)),
      "application/vnd.oci.image.layer.v1.tar+gzip",
    );
    const d2 = await blob(layout, l2, "application/vnd.oci.image.layer.v1.tar");
    const cfg = await blob(
      layout,
      enc.encode(JSON.stringify(CONFIG)),
      "application/vnd.oci.image.config.v1+json",
    );
    const manifest = await blob(
      layout,
      enc.encode(JSON.stringify({ schemaVersion: 2, config: cfg, layers: [d1, d2] })),
      "application/vnd.oci.image.manifest.v1+json",
    );
    await Deno.writeTextFile(`${layout}/oci-layout`, '{"imageLayoutVersion":"1.0.0"}');
    await Deno.writeTextFile(
      `${layout}/index.json`,
      JSON.stringify({
        schemaVersion: 2,
        manifests: [{ ...manifest, platform: { os: "linux", architecture: "amd64" } }],
      }),
    );
    const r = await buildRootfs({ source: layout, output: `${dir}/oci.tar.gz` });
    assert.equal(r.kind, "image");
    await expectMerged(r, dir);
    // The same layout as an OCI archive (a tar of the directory).
    await sh("tar", ["-cf", `${dir}/oci-archive.tar`, "-C", layout, "."]);
    await expectMerged(
      await buildRootfs({ source: `${dir}/oci-archive.tar`, output: `${dir}/o2.tar.gz` }),
      dir,
    );
  });
});

async function dockerSave(dir: string): Promise<string> {
  const save = `${dir}/save`;
  const [l1, l2] = layers();
  await Deno.mkdir(`${save}/a`, { recursive: true });
  await Deno.mkdir(`${save}/b`);
  await Deno.writeFile(`${save}/a/layer.tar`, l1);
  await Deno.writeFile(`${save}/b/layer.tar`, l2);
  await Deno.writeTextFile(`${save}/cfg.json`, JSON.stringify(CONFIG));
  await Deno.writeTextFile(
    `${save}/manifest.json`,
    JSON.stringify([{
      Config: "cfg.json",
      RepoTags: ["x:latest"],
      Layers: ["a/layer.tar", "b/layer.tar"],
    }]),
  );
  await sh("tar", ["-cf", `${dir}/saved.tar`, "-C", save, "manifest.json", "cfg.json", "a", "b"]);
  return `${dir}/saved.tar`;
}

Deno.test("build from a docker save tarball", async () => {
  await withTemp(async (dir) => {
    const saved = await dockerSave(dir);
    const r = await buildRootfs({ source: saved, output: `${dir}/d.tar.gz` });
    await expectMerged(r, dir);
  });
});

Deno.test("build from a Dockerfile: clear error without a working engine; works through one", async () => {
  await withTemp(async (dir) => {
    await Deno.writeTextFile(`${dir}/Dockerfile`, "FROM scratch\n");
    const bin = `${dir}/bin`;
    await Deno.mkdir(bin);
    // An engine whose daemon is down, as docker without dockerd is.
    await Deno.writeTextFile(
      `${bin}/fv-dead-engine`,
      "#!/bin/sh\necho 'Cannot connect to the Docker daemon at unix:///var/run/docker.sock.' >&2\nexit 1\n",
    );
    // An engine that "builds" by saving a prepared image.
    const saved = await dockerSave(dir);
    await Deno.writeTextFile(
      `${bin}/fv-fake-engine`,
      `#!/bin/sh\ncase "$1" in\n  save) cp ${saved} "$3" ;;\nesac\nexit 0\n`,
    );
    await Deno.chmod(`${bin}/fv-dead-engine`, 0o755);
    await Deno.chmod(`${bin}/fv-fake-engine`, 0o755);
    await assert.rejects(
      buildRootfs({
        source: `${dir}/Dockerfile`,
        engine: `${bin}/fv-dead-engine`,
        output: `${dir}/o.tar.gz`,
      }),
      (err: Error & { code?: string }) => {
        assert.equal(err.code, "build.no_engine");
        assert.match(err.message, /does not answer.*Cannot connect to the Docker daemon/);
        return true;
      },
    );
    await assert.rejects(
      buildRootfs({
        source: `${dir}/Dockerfile`,
        engine: `${bin}/none-such`,
        output: `${dir}/o.tar.gz`,
      }),
      { code: "build.no_engine" },
    );
    const r = await buildRootfs({
      source: `${dir}/Dockerfile`,
      engine: `${bin}/fv-fake-engine`,
      output: `${dir}/o.tar.gz`,
    });
    assert.equal(r.kind, "dockerfile");
    await expectMerged(r, dir);
  });
});

/** A Writable collecting text; `isTTY` makes cli-progress draw as on a terminal. */
function sink(tty = false) {
  const w = new Writable({
    write(chunk, _enc, cb) {
      w.text += String(chunk);
      cb();
    },
  }) as Writable & { text: string; isTTY?: boolean; columns?: number };
  w.text = "";
  if (tty) Object.assign(w, { isTTY: true, columns: 120 });
  return w;
}

/** A rootfs directory with a shell and env the way Debian lays them out (merged /usr, links). */
async function goodRootfs(root: string) {
  await Deno.mkdir(`${root}/usr/bin`, { recursive: true });
  await Deno.symlink("usr/bin", `${root}/bin`);
  await Deno.writeTextFile(`${root}/usr/bin/dash`, "#!fake\n");
  await Deno.symlink("dash", `${root}/usr/bin/sh`);
  // An absolute link resolves inside the rootfs, not on this machine.
  await Deno.writeTextFile(`${root}/usr/bin/coreutils`, "#!fake\n");
  await Deno.symlink("/bin/coreutils", `${root}/usr/bin/env`);
}

const exists = (path: string) => {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
};

Deno.test("build says where it writes before building, naming the default output", async () => {
  await withTemp(async (dir) => {
    const src = `${dir}/src`;
    await goodRootfs(src);
    const xdg = Deno.env.get("XDG_CONFIG_HOME");
    Deno.env.set("XDG_CONFIG_HOME", `${dir}/cfg`);
    try {
      const expected = `${dir}/cfg/fly-vault/rootfs/dev-env.tar.gz`;
      const out = sink();
      const report = buildReporter({ json: false, tty: false, out });
      let linesAtPlan: string | undefined;
      const r = await buildRootfs({
        source: src,
        onProgress: (p) => {
          report.onProgress(p);
          // Said first, before anything is written (not even the output's directory).
          if (p.phase === "plan" && !exists(`${dir}/cfg`)) linesAtPlan = out.text;
        },
      });
      report.done(r);
      assert.equal(r.output, expected);
      assert.equal(
        linesAtPlan,
        `building rootfs from ${src} (directory) into ${expected} (the default; -o FILE to choose)\n`,
      );
      assert.match(out.text, /\nwrote /);
      assert.deepEqual(r.warnings, []);

      // With -o, the line names that file and no default; --json carries it as the first event.
      const json = sink();
      const jr = buildReporter({ json: true, tty: false, out: json });
      const r2 = await buildRootfs({
        source: src,
        output: `${dir}/o.tar.gz`,
        onProgress: jr.onProgress,
      });
      jr.done(r2);
      const events = json.text.trim().split("\n").map((l) => JSON.parse(l));
      assert.deepEqual(events[0], {
        event: "build",
        phase: "plan",
        done: 0,
        output: `${dir}/o.tar.gz`,
        defaultOutput: false,
        source: src,
        kind: "dir",
      });
      assert.equal(events.at(-1).event, "built");
      assert.deepEqual(events.at(-1).warnings, []);
    } finally {
      if (xdg === undefined) Deno.env.delete("XDG_CONFIG_HOME");
      else Deno.env.set("XDG_CONFIG_HOME", xdg);
    }
  });
});

Deno.test("build warns (line, hint, JSON field) when the rootfs has no /usr/bin/env or no /bin/sh", async () => {
  await withTemp(async (dir) => {
    // A directory with neither: both warnings, after "wrote", in the error style with hints.
    const bare = `${dir}/bare`;
    await Deno.mkdir(`${bare}/usr/bin`, { recursive: true });
    await Deno.writeTextFile(`${bare}/usr/bin/app`, "x");
    // A link that escapes the rootfs does not count, even if this machine has the target.
    await Deno.symlink("../../../../../../../../bin/sh", `${bare}/usr/bin/sh`);
    const out = sink();
    const report = buildReporter({ json: false, tty: false, out });
    const r = await buildRootfs({ source: bare, output: `${dir}/bare.tar.gz` });
    report.done(r);
    assert.deepEqual(r.warnings.map((w) => w.code), ["build.no_env", "build.no_shell"]);
    assert.match(
      out.text,
      /\nwarning\[build\.no_env\]: the rootfs has no \/usr\/bin\/env: .*\nhint: .+\n/,
    );
    assert.match(out.text, /\nwarning\[build\.no_shell\]: .*\/bin\/sh.*\nhint: .+\n$/);
    const json = sink();
    const jr = buildReporter({ json: true, tty: false, out: json });
    jr.done(r);
    assert.deepEqual(
      JSON.parse(json.text).warnings.map((w: { code: string }) => w.code),
      ["build.no_env", "build.no_shell"],
    );

    // The test images have neither either; one with both (through links) has no warning.
    const saved = await buildRootfs({ source: await dockerSave(dir), output: `${dir}/d.tar.gz` });
    assert.deepEqual(saved.warnings.map((w) => w.code), ["build.no_env", "build.no_shell"]);
    const layer = tarOf(
      craft({ name: "bin", type: "2", linkname: "usr/bin" }),
      craft({ name: "usr/bin/dash", data: enc.encode("#!fake\n"), mode: 0o755 }),
      craft({ name: "usr/bin/sh", type: "2", linkname: "dash" }),
      craft({ name: "usr/bin/coreutils", data: enc.encode("#!fake\n"), mode: 0o755 }),
      craft({ name: "usr/bin/env", type: "2", linkname: "/bin/coreutils" }),
    );
    const save = `${dir}/save2`;
    await Deno.mkdir(`${save}/a`, { recursive: true });
    await Deno.writeFile(`${save}/a/layer.tar`, layer);
    await Deno.writeTextFile(`${save}/cfg.json`, JSON.stringify(CONFIG));
    await Deno.writeTextFile(
      `${save}/manifest.json`,
      JSON.stringify([{ Config: "cfg.json", RepoTags: ["y:latest"], Layers: ["a/layer.tar"] }]),
    );
    await sh("tar", ["-cf", `${dir}/saved2.tar`, "-C", save, "manifest.json", "cfg.json", "a"]);
    const good = await buildRootfs({ source: `${dir}/saved2.tar`, output: `${dir}/g.tar.gz` });
    assert.deepEqual(good.warnings, []);
  });
});

Deno.test("build's progress bar on a terminal ends at 100% before 'wrote'", async () => {
  await withTemp(async (dir) => {
    const src = `${dir}/src`;
    await goodRootfs(src);
    // Enough bytes for several pipe chunks: the first progress event is a few percent.
    const noise = new Uint8Array(4 << 20);
    for (let i = 0; i < noise.length; i += 65536) {
      crypto.getRandomValues(noise.subarray(i, i + 65536));
    }
    await Deno.writeFile(`${src}/noise`, noise);
    const out = sink(true);
    const report = buildReporter({ json: false, tty: true, out });
    const r = await buildRootfs({
      source: src,
      output: `${dir}/o.tar.gz`,
      onProgress: report.onProgress,
    });
    report.done(r);
    const beforeWrote = out.text.slice(0, out.text.indexOf("wrote "));
    const frames = [...beforeWrote.matchAll(/pack +\[[^\]]*\] (\d+)%/g)].map((m) => Number(m[1]));
    assert.ok(frames.length > 0, JSON.stringify(beforeWrote));
    assert.equal(frames.at(-1), 100, `last frame: ${JSON.stringify(beforeWrote.slice(-300))}`);
  });
});
