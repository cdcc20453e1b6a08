import assert from "node:assert/strict";
import {
  DEFAULT_LIMITS,
  type ExtractLimits,
  extractRootfs,
  removeTree,
  RootfsError,
} from "./mod.ts";
import {
  craft,
  diffManifests,
  gz,
  manifest,
  paxHeader,
  sh,
  sha256,
  streamOf,
  tarOf,
} from "./testutil.ts";

const enc = new TextEncoder();

async function withTemp(fn: (dir: string) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "fv-rootfs-test-" });
  try {
    await fn(dir);
  } finally {
    await removeTree(dir); // unmounts first
  }
}

async function exists(p: string) {
  return await Deno.lstat(p).then(() => true, () => false);
}

async function refuses(
  dir: string,
  bytes: Uint8Array,
  code: string,
  opts: {
    limits?: ExtractLimits;
    sha?: string;
    size?: number;
    staging?: string;
    entry?: string;
    spaceLeft?: number;
  } = {},
) {
  const staging = opts.staging ?? `${dir}/staging`;
  await assert.rejects(
    extractRootfs(streamOf(bytes, 4096), {
      stagingDir: staging,
      limits: opts.limits ?? DEFAULT_LIMITS,
      expectedSha256: opts.sha,
      expectedSize: opts.size,
      spaceLeft: opts.spaceLeft,
    }),
    (err: unknown) => {
      assert.ok(err instanceof Error);
      assert.equal((err as RootfsError).code, code, `${(err as Error).message}`);
      if (opts.entry) assert.equal((err as RootfsError).entry, opts.entry);
      return true;
    },
  );
  assert.equal(await exists(staging), false, "the staging directory is removed");
}

/** Builds a tar.gz from `dir` with GNU tar (the writer a real rootfs comes from). */
async function gnuTarGz(dir: string, out: string, extra: string[] = ["."]) {
  await sh("tar", [
    "--numeric-owner",
    "--xattrs",
    "--xattrs-include=*",
    "-czf",
    out,
    "-C",
    dir,
    ...extra,
  ]);
  return await Deno.readFile(out);
}

Deno.test("a GNU tar archive extracts exactly like GNU tar extracts it", async () => {
  await withTemp(async (dir) => {
    const src = `${dir}/src`;
    await Deno.mkdir(`${src}/usr/bin`, { recursive: true });
    await Deno.mkdir(`${src}/dev`);
    await Deno.writeTextFile(`${src}/usr/bin/tool`, "#!/bin/sh\necho hi\n");
    await Deno.link(`${src}/usr/bin/tool`, `${src}/usr/bin/tool2`);
    await Deno.symlink("/usr/bin/tool", `${src}/usr/bin/abs-link`);
    await Deno.symlink("../bin", `${src}/usr/rel-link`);
    await Deno.chown(`${src}/usr/bin/tool2`, 1234, 5678);
    await Deno.chmod(`${src}/usr/bin/tool`, 0o4755); // after chown, which clears setuid
    await sh("setfattr", [
      "-n",
      "security.capability",
      "-v",
      "0x0100000200200000000000000000000000000000",
      `${src}/usr/bin/tool`,
    ]);
    await sh("setfattr", ["-n", "user.note", "-v", "kept", `${src}/usr`]);
    await sh("mknod", [`${src}/dev/null`, "c", "1", "3"]);
    const long = "d".repeat(120) + "/" + "f".repeat(150);
    await Deno.mkdir(`${src}/${long.split("/")[0]}`);
    await Deno.writeTextFile(`${src}/${long}`, "long names go through GNU 'L' headers");
    const bytes = await gnuTarGz(src, `${dir}/a.tar.gz`);

    const ref = `${dir}/ref`;
    await Deno.mkdir(ref);
    await sh("tar", [
      "-xzf",
      `${dir}/a.tar.gz`,
      "--numeric-owner",
      "-p",
      "--xattrs",
      "--xattrs-include=*",
      "-C",
      ref,
    ]);
    const progress: number[] = [];
    const r = await extractRootfs(streamOf(bytes), {
      stagingDir: `${dir}/ours`,
      limits: DEFAULT_LIMITS,
      expectedSha256: sha256(bytes),
      expectedSize: bytes.length,
      onProgress: (p) => progress.push(p.compressedBytes),
      progressIntervalMs: 0,
    });
    assert.equal(r.sha256, sha256(bytes));
    assert.equal(r.compressedBytes, bytes.length);
    assert.deepEqual(r.notes, ["1 char device under /dev node(s) skipped"]);
    assert.ok(progress.length > 0);
    const notDev = (p: string) => p === "dev/null";
    const a = await manifest(ref, { exclude: notDev });
    const b = await manifest(`${dir}/ours`, { exclude: notDev });
    assert.deepEqual(diffManifests(a, b), []);
    assert.match(b.get("usr/bin/tool")!, /mode=4755.*xattr:security.capability=0x01/);
    assert.match(b.get("usr/bin/abs-link")!, / -> \/usr\/bin\/tool/);
    assert.equal(await exists(`${dir}/ours/dev/null`), false, "device nodes under /dev skipped");
  });
});

Deno.test("refused: an entry with a '..' component", async () => {
  await withTemp(async (dir) => {
    const t = tarOf(craft({ name: "etc/../../escape", data: enc.encode("x") }));
    await refuses(dir, gz(t), "rootfs.dotdot", { entry: "etc/../../escape" });
    assert.equal(await exists(`${dir}/escape`), false);
  });
});

Deno.test("refused: an absolute path", async () => {
  await withTemp(async (dir) => {
    const t = tarOf(craft({ name: `${dir}/abs-escape`, data: enc.encode("x") }));
    await refuses(dir, gz(t), "rootfs.absolute_path");
    assert.equal(await exists(`${dir}/abs-escape`), false);
  });
});

Deno.test("refused: '..' hidden in a pax path, a GNU long name and a ustar prefix", async () => {
  await withTemp(async (dir) => {
    const pax = tarOf(paxHeader({ path: "../pax-escape" }), craft({ name: "harmless" }));
    await refuses(dir, gz(pax), "rootfs.dotdot");
    const longName = enc.encode("a/".repeat(60) + "../".repeat(70) + "gnu-escape\0");
    const gnu = tarOf(
      craft({ name: "././@LongLink", type: "L", data: longName }),
      craft({ name: "x" }),
    );
    await refuses(dir, gz(gnu), "rootfs.dotdot");
    const prefixed = tarOf(craft({ name: "prefix-escape", prefix: ".." }));
    await refuses(dir, gz(prefixed), "rootfs.dotdot");
  });
});

Deno.test("refused: a symlink followed by a file written through it (GNU tar archive)", async () => {
  await withTemp(async (dir) => {
    const outside = `${dir}/outside`;
    await Deno.mkdir(outside);
    await Deno.mkdir(`${dir}/a`);
    await Deno.symlink(outside, `${dir}/a/link`);
    await sh("tar", ["-cf", `${dir}/t.tar`, "-C", `${dir}/a`, "link"]);
    await Deno.mkdir(`${dir}/b/link`, { recursive: true });
    await Deno.writeTextFile(`${dir}/b/link/pwned`, "owned");
    await sh("tar", ["-rf", `${dir}/t.tar`, "-C", `${dir}/b`, "link/pwned"]);
    const t = await Deno.readFile(`${dir}/t.tar`);
    await refuses(dir, gz(t), "rootfs.through_symlink", { entry: "link/pwned" });
    assert.equal(await exists(`${outside}/pwned`), false, "nothing written outside");
  });
});

Deno.test("refused: a later entry replacing a symlink, and a relative symlink chain", async () => {
  await withTemp(async (dir) => {
    const t = tarOf(
      craft({ name: "up", type: "2", linkname: ".." }),
      craft({ name: "up", type: "5", mode: 0o755 }),
    );
    await refuses(dir, gz(t), "rootfs.through_symlink");
    const chain = tarOf(
      craft({ name: "d", type: "5", mode: 0o755 }),
      craft({ name: "d/l", type: "2", linkname: "../.." }),
      craft({ name: "d/l/x", data: enc.encode("x") }),
    );
    await refuses(dir, gz(chain), "rootfs.through_symlink", { entry: "d/l/x" });
  });
});

Deno.test("refused: hardlinks to a path outside, absolute, or through a symlink", async () => {
  await withTemp(async (dir) => {
    await refuses(
      dir,
      gz(tarOf(craft({ name: "h", type: "1", linkname: "/etc/passwd" }))),
      "rootfs.hardlink_escape",
      { entry: "h" },
    );
    await refuses(
      dir,
      gz(tarOf(craft({ name: "h", type: "1", linkname: "../../etc/passwd" }))),
      "rootfs.hardlink_escape",
    );
    await refuses(
      dir,
      gz(tarOf(craft({ name: "h", type: "1", linkname: "never-seen" }))),
      "rootfs.hardlink_escape",
    );
    const through = tarOf(
      craft({ name: "etc", type: "2", linkname: "/etc" }),
      craft({ name: "h", type: "1", linkname: "etc/passwd" }),
    );
    await refuses(dir, gz(through), "rootfs.through_symlink");
    // A hardlink to a symlink is a second name for it.
    const alias = tarOf(
      craft({ name: "a", type: "2", linkname: "/etc" }),
      craft({ name: "b", type: "1", linkname: "a" }),
      craft({ name: "b/passwd", data: enc.encode("x") }),
    );
    await refuses(dir, gz(alias), "rootfs.through_symlink", { entry: "b/passwd" });
  });
});

Deno.test("refused: char and block devices and fifos outside /dev (GNU tar archive)", async () => {
  await withTemp(async (dir) => {
    for (
      const [name, args, kind] of [
        ["char", ["c", "1", "3"], "char"],
        ["block", ["b", "7", "0"], "block"],
        ["fifo", ["p"], "fifo"],
      ] as const
    ) {
      const src = `${dir}/src-${name}`;
      await Deno.mkdir(`${src}/etc`, { recursive: true });
      await sh("mknod", [`${src}/etc/${name}`, ...args]);
      const bytes = await gnuTarGz(src, `${dir}/${name}.tar.gz`);
      await refuses(dir, bytes, "rootfs.device", { entry: `./etc/${name}` });
      void kind;
    }
  });
});

Deno.test("refused: an entry larger than the space left on the volume", async () => {
  await withTemp(async (dir) => {
    await Deno.mkdir(`${dir}/small`);
    await sh("mount", ["-t", "tmpfs", "-o", "size=4m", "tmpfs", `${dir}/small`]);
    const big = new Uint8Array(8 * 2 ** 20);
    const t = tarOf(craft({ name: "big.bin", data: big }));
    await refuses(dir, gz(t), "rootfs.no_space", {
      staging: `${dir}/small/staging`,
      entry: "big.bin",
    });
  });
});

Deno.test("refused: a gzip bomb, past the size limit and past the ratio limit", async () => {
  await withTemp(async (dir) => {
    const zeros = tarOf(craft({ name: "zeros", data: new Uint8Array(32 * 2 ** 20) }));
    const bomb = gz(zeros);
    await refuses(dir, bomb, "rootfs.bomb", {
      limits: { ...DEFAULT_LIMITS, maxUncompressedBytes: 2 ** 20 },
    });
    await refuses(dir, bomb, "rootfs.bomb", { limits: { ...DEFAULT_LIMITS, maxRatio: 50 } });
  });
});

Deno.test("refused: too many entries", async () => {
  await withTemp(async (dir) => {
    const t = tarOf(...Array.from({ length: 20 }, (_, i) => craft({ name: `f${i}` })));
    await refuses(dir, gz(t), "rootfs.too_many_entries", {
      limits: { ...DEFAULT_LIMITS, maxEntries: 10 },
    });
  });
});

Deno.test("refused: truncated gzip, and a tar cut inside an entry", async () => {
  await withTemp(async (dir) => {
    const t = tarOf(craft({ name: "file", data: crypto.getRandomValues(new Uint8Array(60_000)) }));
    const z = gz(t);
    await refuses(dir, z.subarray(0, z.length - 30_000), "rootfs.truncated_gzip");
    await refuses(dir, z.subarray(0, z.length - 5), "rootfs.truncated_gzip");
    await refuses(dir, gz(t.subarray(0, 20_000)), "rootfs.truncated_tar");
  });
});

Deno.test("refused: not gzip at all (a plain tar, and an empty upload)", async () => {
  await withTemp(async (dir) => {
    await refuses(dir, tarOf(craft({ name: "plain" })), "rootfs.not_gzip");
    await refuses(dir, new Uint8Array(0), "rootfs.not_gzip");
  });
});

Deno.test("refused at the end: sha256 or size mismatch; short upload is incomplete", async () => {
  await withTemp(async (dir) => {
    const z = gz(tarOf(craft({ name: "f", data: enc.encode("hello") })));
    await refuses(dir, z, "rootfs.sha256_mismatch", { sha: "0".repeat(64) });
    await refuses(dir, z, "rootfs.size_mismatch", { size: z.length - 1 });
    await refuses(dir, z, "rootfs.incomplete", { size: z.length + 100 });
  });
});

Deno.test("refused: crafted headers GNU tar would misread or treat differently", async () => {
  await withTemp(async (dir) => {
    await refuses(dir, gz(tarOf(craft({ name: "f", badChecksum: true }))), "rootfs.bad_header");
    await refuses(dir, gz(tarOf(craft({ name: "q", type: "Q" }))), "rootfs.unsupported_type");
    await refuses(dir, gz(tarOf(craft({ name: "s", type: "S" }))), "rootfs.unsupported_type");
    const sparse = tarOf(paxHeader({ "GNU.sparse.name": "../x" }), craft({ name: "f" }));
    await refuses(dir, gz(sparse), "rootfs.unsupported_type");
    const global = tarOf(paxHeader({ path: "evil" }, "g"), craft({ name: "f" }));
    await refuses(dir, gz(global), "rootfs.bad_header");
    // An 'x' checked with a /dev node that is dropped must not reach tar ahead of another entry.
    const detached = tarOf(
      paxHeader({ path: "dev/sub" }),
      paxHeader({ comment: "x" }, "g"),
      craft({ name: "dev/n", type: "3" }),
      craft({ name: "innocent", type: "2", linkname: "/etc" }),
      craft({ name: "dev/sub/passwd", data: enc.encode("x") }),
    );
    await refuses(dir, gz(detached), "rootfs.bad_header");
    // A NUL in a pax path: GNU tar would use the part before it, not the name checked.
    const nul = tarOf(
      paxHeader({ path: "link\0tail" }),
      craft({ name: "x", type: "2", linkname: "/" }),
    );
    await refuses(dir, gz(nul), "rootfs.bad_header");
    // GNU tar makes "name/" of type '0' a directory and would not read its data as data.
    const slashFile = tarOf(craft({ name: "d/", data: enc.encode("hidden header") }));
    await refuses(dir, gz(slashFile), "rootfs.bad_header");
    const dataOnLink = tarOf(
      craft({ name: "l", type: "2", linkname: "x", data: enc.encode("hidden header") }),
    );
    await refuses(dir, gz(dataOnLink), "rootfs.bad_header");
  });
});

Deno.test("absolute symlink targets are kept verbatim and nothing stops after the end marker", async () => {
  await withTemp(async (dir) => {
    const t = tarOf(
      craft({ name: "etc", type: "5", mode: 0o755 }),
      craft({ name: "etc/alt", type: "2", linkname: "/etc/alternatives/editor" }),
    );
    // Garbage after the end-of-archive marker is ignored, as GNU tar does.
    const withTail = new Uint8Array([...t, ...craft({ name: "../after-end" })]);
    const r = await extractRootfs(streamOf(gz(withTail)), {
      stagingDir: `${dir}/s`,
      limits: DEFAULT_LIMITS,
    });
    assert.equal(r.entries, 2);
    assert.equal(await Deno.readLink(`${dir}/s/etc/alt`), "/etc/alternatives/editor");
  });
});
