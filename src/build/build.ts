/**
 * `fly-vault build`: writes a rootfs tar.gz from a directory (GNU tar,
 * `--numeric-owner --xattrs`), from an image (OCI layout or `docker save`
 * tarball: layers merged in order with whiteouts applied, entries copied
 * verbatim so nothing the image's tar writer recorded is lost, no root
 * needed), or from a Dockerfile through docker or podman.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { VaultError } from "../errors/mod.ts";
import { IMAGE_CONFIG_PATH } from "../rootfs/mod.ts";
import {
  dirFiles,
  type ImageDeclaration,
  type ImageFiles,
  layerTar,
  resolveImage,
  tarFiles,
} from "./image.ts";
import { TarReader } from "./tarstream.ts";

/** What to build from. */
export type BuildSourceKind = "auto" | "dir" | "image" | "dockerfile";

/** Progress of a build. */
export interface BuildProgress {
  /** `plan` comes first, before any work: what is built from what, and where it goes. */
  phase: "plan" | "scan" | "pack" | "engine";
  /** Input bytes processed (uncompressed tar bytes for pack). */
  done: number;
  total?: number;
  note?: string;
  /** With `plan`: the file the build writes. */
  output?: string;
  /** With `plan`: true when no output was asked for and {@link defaultOutput} is used. */
  defaultOutput?: boolean;
  /** With `plan`: the source and what it was taken for. */
  source?: string;
  kind?: Exclude<BuildSourceKind, "auto">;
}

/** Something the rootfs lacks that makes the vault fail later; the build still succeeds. */
export interface BuildWarning {
  code: string;
  message: string;
  hint: string;
}

/** Options of {@link buildRootfs}. */
export interface BuildOptions {
  /** A directory, an OCI layout (dir or tar), a docker-save tarball, or a Dockerfile. */
  source: string;
  kind?: BuildSourceKind;
  /** Build context for a Dockerfile (default: its directory). */
  context?: string;
  /** Output tar.gz; default {@link defaultOutput}. */
  output?: string;
  /** `docker` or `podman`; default: the first that works. */
  engine?: string;
  onProgress?: (p: BuildProgress) => void;
}

/** What a build wrote. */
export interface BuildResult {
  output: string;
  sha256: string;
  bytes: number;
  uncompressedBytes: number;
  kind: Exclude<BuildSourceKind, "auto">;
  /** The workload argv recorded (Entrypoint + Cmd), when the image declares one. */
  workload?: string[];
  seconds: number;
  /** What the vault will miss in this rootfs (empty when nothing). */
  warnings: BuildWarning[];
}

/** What a path is inside a rootfs, without following a final symlink. */
type Node = { type: "file" | "dir" | "other" } | { type: "symlink"; target: string };

/**
 * Resolves `path` inside a rootfs the way the kernel does after chroot:
 * symlinks followed (absolute ones from the rootfs's root, `..` stopping at
 * it), at most 40 of them. Returns the final node's type, or null.
 */
async function resolveIn(
  lookup: (path: string) => Promise<Node | null>,
  path: string,
): Promise<Node["type"] | null> {
  let todo = path.split("/").filter(Boolean);
  let at: string[] = [];
  let links = 0;
  while (todo.length) {
    const part = todo.shift()!;
    if (part === ".") continue;
    if (part === "..") {
      at.pop();
      continue;
    }
    const node = await lookup("/" + [...at, part].join("/"));
    if (!node) return null;
    if (node.type === "symlink") {
      if (++links > 40) return null;
      if (node.target.startsWith("/")) at = [];
      todo = [...node.target.split("/").filter(Boolean), ...todo];
      continue;
    }
    if (todo.length && node.type !== "dir") return null;
    at.push(part);
    if (!todo.length) return node.type;
  }
  return "dir";
}

/** The programs init runs every command through; a rootfs without them builds but cannot work. */
async function checkRootfs(
  lookup: (path: string) => Promise<Node | null>,
): Promise<BuildWarning[]> {
  const warnings: BuildWarning[] = [];
  if (await resolveIn(lookup, "/usr/bin/env") !== "file") {
    warnings.push({
      code: "build.no_env",
      message: "the rootfs has no /usr/bin/env: the vault starts every command through it, " +
        "so console, exec and the workload will all fail",
      hint: "build from an image with coreutils (debian, ubuntu) or busybox (alpine)",
    });
  }
  if (await resolveIn(lookup, "/bin/sh") !== "file") {
    warnings.push({
      code: "build.no_shell",
      message: "the rootfs has no shell at /bin/sh: the console and exec run one",
      hint: "build from an image with a shell (debian, ubuntu, alpine) or add busybox",
    });
  }
  return warnings;
}

/** Looks paths up in a rootfs directory on this machine. */
function dirLookup(root: string): (path: string) => Promise<Node | null> {
  return async (path) => {
    try {
      const st = await Deno.lstat(root + path);
      if (st.isSymlink) return { type: "symlink", target: await Deno.readLink(root + path) };
      return { type: st.isDirectory ? "dir" : st.isFile ? "file" : "other" };
    } catch {
      return null;
    }
  };
}

/** Looks paths up among the entries a merged image wrote (parents implied). */
function entriesLookup(entries: Map<string, Node>): (path: string) => Promise<Node | null> {
  const dirs = new Set<string>();
  for (const p of entries.keys()) for (const a of ancestors(p)) dirs.add(a);
  return (path) => {
    const p = path.slice(1);
    return Promise.resolve(entries.get(p) ?? (dirs.has(p) ? { type: "dir" } : null));
  };
}

/** `$XDG_CONFIG_HOME/fly-vault/rootfs/dev-env.tar.gz` (or under `~/.config`). */
export function defaultOutput(): string {
  const base = Deno.env.get("XDG_CONFIG_HOME") ?? `${Deno.env.get("HOME") ?? "."}/.config`;
  return `${base}/fly-vault/rootfs/dev-env.tar.gz`;
}

/** Counts, gzips (`gzip -n`, so equal input gives equal output) and hashes into a file. */
class GzipSink {
  #child: Deno.ChildProcess;
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #done: Promise<{ sha256: string; bytes: number }>;
  uncompressed = 0;

  constructor(readonly tmp: string) {
    this.#child = new Deno.Command("gzip", {
      args: ["-6", "-n", "-c"],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#writer = this.#child.stdin.getWriter();
    const stdout = this.#child.stdout;
    this.#done = (async () => {
      const file = await Deno.open(tmp, { write: true, create: true, truncate: true, mode: 0o644 });
      const hash = createHash("sha256");
      let bytes = 0;
      try {
        for await (const c of stdout) {
          hash.update(c);
          bytes += c.length;
          let off = 0;
          while (off < c.length) off += await file.write(c.subarray(off));
        }
        await file.sync();
      } finally {
        file.close();
      }
      return { sha256: hash.digest("hex"), bytes };
    })();
  }

  async write(bytes: Uint8Array): Promise<void> {
    this.uncompressed += bytes.length;
    await this.#writer.write(bytes);
  }

  async finish(): Promise<{ sha256: string; bytes: number }> {
    await this.#writer.close();
    const [st, out] = await Promise.all([this.#child.status, this.#done]);
    if (!st.success) throw new VaultError("build.gzip_failed", "gzip failed");
    return out;
  }

  async abort(): Promise<void> {
    await this.#writer.abort().catch(() => {});
    try {
      this.#child.kill("SIGKILL");
    } catch { /* gone */ }
    await this.#child.status;
    await this.#done.catch(() => {});
    await Deno.remove(this.tmp).catch(() => {});
  }
}

async function withOutput(
  output: string,
  fn: (sink: GzipSink) => Promise<void>,
): Promise<{ sha256: string; bytes: number; uncompressed: number }> {
  const dir = output.slice(0, output.lastIndexOf("/")) || ".";
  await Deno.mkdir(dir, { recursive: true });
  const sink = new GzipSink(`${output}.tmp-${Deno.pid}`);
  try {
    await fn(sink);
    const r = await sink.finish();
    await Deno.rename(sink.tmp, output);
    return { ...r, uncompressed: sink.uncompressed };
  } catch (err) {
    await sink.abort();
    throw err;
  }
}

async function duBytes(dir: string): Promise<number | undefined> {
  const r = await new Deno.Command("du", {
    args: ["-sb", "--apparent-size", dir],
    stdout: "piped",
    stderr: "null",
  })
    .output();
  const n = Number(new TextDecoder().decode(r.stdout).split("\t")[0]);
  return Number.isFinite(n) ? n : undefined;
}

/** Packs a directory with GNU tar (exact: numeric owners, xattrs, hardlinks). */
async function packDir(dir: string, sink: GzipSink, onProgress?: (p: BuildProgress) => void) {
  const total = await duBytes(dir);
  const tar = new Deno.Command("tar", {
    args: ["-c", "-f", "-", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-C", dir, "."],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const err = new Response(tar.stderr).text();
  let last = 0;
  for await (const c of tar.stdout) {
    await sink.write(c);
    const now = performance.now();
    if (now - last > 200) {
      last = now;
      onProgress?.({ phase: "pack", done: sink.uncompressed, total });
    }
  }
  // The last chunk's progress may have been skipped by the throttle: end the bar where it ends.
  onProgress?.({ phase: "pack", done: sink.uncompressed, total: sink.uncompressed });
  const st = await tar.status;
  if (!st.success) {
    throw new VaultError(
      "build.tar_failed",
      `tar could not read ${dir}: ${(await err).trim().split("\n").slice(-3).join("; ")}`,
      "run as root to read every file of a rootfs directory",
    );
  }
}

/** A ustar header for a small entry fly-vault adds itself. */
function ustar(name: string, type: "0" | "5", size: number, mode: number): Uint8Array {
  const h = new Uint8Array(512);
  const put = (off: number, s: string) => h.set(new TextEncoder().encode(s), off);
  const oct = (off: number, len: number, v: number) =>
    put(off, v.toString(8).padStart(len - 1, "0") + "\0");
  put(0, name);
  oct(100, 8, mode);
  oct(108, 8, 0);
  oct(116, 8, 0);
  oct(124, 12, size);
  oct(136, 12, Math.floor(Date.now() / 1000));
  h.fill(0x20, 148, 156);
  h[156] = type.charCodeAt(0);
  put(257, "ustar\0");
  put(263, "00");
  let sum = 0;
  for (const b of h) sum += b;
  put(148, sum.toString(8).padStart(6, "0") + "\0 ");
  return h;
}

/** The tar bytes that add `/.fly-vault/image.json`. */
function declarationEntries(decl: ImageDeclaration): Uint8Array[] {
  const body = new TextEncoder().encode(JSON.stringify(decl, null, 2) + "\n");
  const padded = new Uint8Array(Math.ceil(body.length / 512) * 512);
  padded.set(body);
  const dir = IMAGE_CONFIG_PATH.slice(0, IMAGE_CONFIG_PATH.indexOf("/"));
  return [
    ustar(`${dir}/`, "5", 0, 0o755),
    ustar(IMAGE_CONFIG_PATH, "0", body.length, 0o644),
    padded,
  ];
}

function ancestors(path: string): string[] {
  const out: string[] = [];
  let i = path.indexOf("/");
  while (i !== -1) {
    out.push(path.slice(0, i));
    i = path.indexOf("/", i + 1);
  }
  return out;
}

/**
 * Merges image layers into one tar: a lower layer's entry is dropped when an
 * upper layer has the same path, whites it (or a parent) out (`.wh.NAME`),
 * marks a parent opaque (`.wh..wh..opq`), or has a non-directory at a parent.
 */
async function mergeLayers(
  files: ImageFiles,
  layers: { path: string; size: number }[],
  sink: GzipSink,
  onProgress?: (p: BuildProgress) => void,
): Promise<Map<string, Node>> {
  const written = new Map<string, Node>();
  type LayerInfo = { paths: Map<string, boolean>; whiteouts: Set<string>; opaque: Set<string> };
  const infos: LayerInfo[] = [];
  const total = layers.reduce((n, l) => n + l.size, 0);
  let scanned = 0;
  for (const [i, layer] of layers.entries()) {
    const info: LayerInfo = { paths: new Map(), whiteouts: new Set(), opaque: new Set() };
    const r = new TarReader(await layerTar(await files.stream(layer.path)));
    for (;;) {
      const e = await r.next();
      if (!e) break;
      const slash = e.path.lastIndexOf("/");
      const dir = slash === -1 ? "" : e.path.slice(0, slash);
      const base = e.path.slice(slash + 1);
      if (base === ".wh..wh..opq") info.opaque.add(dir);
      else if (base.startsWith(".wh.")) {
        info.whiteouts.add(dir ? `${dir}/${base.slice(4)}` : base.slice(4));
      } else info.paths.set(e.path, e.type === "5");
    }
    await r.cancel();
    infos.push(info);
    scanned += layer.size;
    onProgress?.({ phase: "scan", done: scanned, total, note: `layer ${i + 1}/${layers.length}` });
  }

  const hiddenBy = (path: string, i: number): boolean => {
    const parents = ancestors(path);
    for (let j = i + 1; j < infos.length; j++) {
      const u = infos[j];
      const isDir = u.paths.get(path);
      if (isDir !== undefined && !(isDir && infos[i].paths.get(path))) return true;
      if (u.whiteouts.has(path)) return true;
      for (const p of parents) {
        if (u.whiteouts.has(p) || u.opaque.has(p) || u.paths.get(p) === false) return true;
      }
      if (path !== "" && u.opaque.has("")) return true;
    }
    return false;
  };

  let last = 0;
  for (const [i, layer] of layers.entries()) {
    const r = new TarReader(await layerTar(await files.stream(layer.path)));
    for (;;) {
      const e = await r.next();
      if (!e) break;
      const base = e.path.slice(e.path.lastIndexOf("/") + 1);
      if (base.startsWith(".wh.") || (e.path !== "" && hiddenBy(e.path, i))) {
        await r.skip();
        continue;
      }
      written.set(
        e.path,
        e.type === "2"
          ? { type: "symlink", target: e.linkpath }
          : { type: e.type === "5" ? "dir" : e.type === "0" || e.type === "1" ? "file" : "other" },
      );
      for (const h of e.header) await sink.write(h);
      for await (const c of r.data()) await sink.write(c);
      const now = performance.now();
      if (now - last > 200) {
        last = now;
        onProgress?.({
          phase: "pack",
          done: sink.uncompressed,
          note: `layer ${i + 1}/${layers.length}`,
        });
      }
    }
    await r.cancel();
  }
  onProgress?.({ phase: "pack", done: sink.uncompressed, note: `${layers.length} layers` });
  return written;
}

async function isTarFile(path: string): Promise<"tar" | "gzip" | null> {
  const f = await Deno.open(path);
  try {
    const h = new Uint8Array(512);
    const n = await f.read(h);
    if (n !== null && n >= 2 && h[0] === 0x1f && h[1] === 0x8b) return "gzip";
    if (n === 512 && h[257] === 0x75 && h[258] === 0x73 && h[259] === 0x74) return "tar";
    return null;
  } finally {
    f.close();
  }
}

async function engineThatWorks(preferred?: string): Promise<string> {
  const candidates = preferred ? [preferred] : ["docker", "podman"];
  const problems: string[] = [];
  for (const engine of candidates) {
    let r: Deno.CommandOutput | null = null;
    try {
      r = await new Deno.Command(engine, { args: ["info"], stdout: "null", stderr: "piped" })
        .output();
    } catch { /* not installed: spawning fails */ }
    if (r === null) {
      problems.push(`${engine}: not installed`);
      continue;
    }
    if (r.success) return engine;
    const why = new TextDecoder().decode(r.stderr).trim().split("\n").filter(Boolean).at(-1) ?? "";
    problems.push(`${engine}: installed, but its engine does not answer (${why.slice(0, 200)})`);
  }
  throw new VaultError(
    "build.no_engine",
    `building a Dockerfile needs a working docker or podman — ${problems.join("; ")}`,
    "start the Docker daemon or install podman; or build the image elsewhere and pass its `docker save` tarball or OCI layout",
  );
}

async function buildDockerfile(
  dockerfile: string,
  context: string,
  engine: string,
  tmpTar: string,
  onProgress?: (p: BuildProgress) => void,
): Promise<void> {
  const tag = `fly-vault-build-${crypto.randomUUID().slice(0, 8)}`;
  const run = async (args: string[], note: string) => {
    onProgress?.({ phase: "engine", done: 0, note });
    const r = await new Deno.Command(engine, { args, stdout: "null", stderr: "piped" }).output();
    if (!r.success) {
      throw new VaultError(
        "build.engine_failed",
        `${engine} ${args[0]} failed: ${
          new TextDecoder().decode(r.stderr).trim().split("\n").slice(-5).join("; ")
        }`,
      );
    }
  };
  await run(["build", "-t", tag, "-f", dockerfile, context], `${engine} build`);
  try {
    await run(["save", "-o", tmpTar, tag], `${engine} save`);
  } finally {
    await new Deno.Command(engine, { args: ["rmi", tag], stdout: "null", stderr: "null" }).output()
      .catch(() => {});
  }
}

/** Builds a rootfs tar.gz; see the module doc for the sources it takes. */
export async function buildRootfs(opts: BuildOptions): Promise<BuildResult> {
  const started = performance.now();
  const output = opts.output ?? defaultOutput();
  let st: Deno.FileInfo;
  try {
    st = await Deno.stat(opts.source);
  } catch {
    throw new VaultError("build.no_source", `${opts.source} does not exist`);
  }
  let kind = opts.kind ?? "auto";
  if (kind === "auto") {
    const name = opts.source.slice(opts.source.lastIndexOf("/") + 1);
    if (st.isDirectory) {
      kind = await dirFiles(opts.source).has("oci-layout") ? "image" : "dir";
    } else if (/dockerfile|containerfile/i.test(name) && !await isTarFile(opts.source)) {
      kind = "dockerfile";
    } else kind = "image";
  }
  opts.onProgress?.({
    phase: "plan",
    done: 0,
    output,
    defaultOutput: opts.output === undefined,
    source: opts.source,
    kind,
  });
  const cleanup: string[] = [];
  try {
    let imagePath = opts.source;
    if (kind === "dockerfile") {
      const engine = await engineThatWorks(opts.engine);
      imagePath = `${output}.image-${Deno.pid}.tar`;
      cleanup.push(imagePath);
      const context = opts.context ??
        (opts.source.includes("/") ? opts.source.slice(0, opts.source.lastIndexOf("/")) : ".");
      await Deno.mkdir(output.slice(0, output.lastIndexOf("/")) || ".", { recursive: true });
      await buildDockerfile(opts.source, context, engine, imagePath, opts.onProgress);
    }
    if (kind === "dir") {
      const r = await withOutput(output, (sink) => packDir(opts.source, sink, opts.onProgress));
      return {
        output,
        sha256: r.sha256,
        bytes: r.bytes,
        uncompressedBytes: r.uncompressed,
        kind: "dir",
        seconds: (performance.now() - started) / 1000,
        warnings: await checkRootfs(dirLookup(opts.source)),
      };
    }
    let files: ImageFiles;
    if ((await Deno.stat(imagePath)).isDirectory) files = dirFiles(imagePath);
    else {
      const t = await isTarFile(imagePath);
      if (t === null) {
        throw new VaultError(
          "build.unknown_image",
          `${imagePath} is neither a directory nor a tar archive`,
        );
      }
      if (t === "gzip") {
        const plain = `${output}.image-${Deno.pid}-plain.tar`;
        cleanup.push(plain);
        await Deno.mkdir(output.slice(0, output.lastIndexOf("/")) || ".", { recursive: true });
        const src = await Deno.open(imagePath);
        await Deno.writeFile(plain, src.readable.pipeThrough(new DecompressionStream("gzip")));
        imagePath = plain;
      }
      files = await tarFiles(imagePath);
    }
    const image = await resolveImage(files);
    const argv = [...(image.config.Entrypoint ?? []), ...(image.config.Cmd ?? [])];
    let written = new Map<string, Node>();
    const r = await withOutput(output, async (sink) => {
      written = await mergeLayers(files, image.layers, sink, opts.onProgress);
      for (const b of declarationEntries(image.config)) await sink.write(b);
      await sink.write(new Uint8Array(1024));
    });
    return {
      output,
      sha256: r.sha256,
      bytes: r.bytes,
      uncompressedBytes: r.uncompressed,
      kind,
      workload: argv.length ? argv : undefined,
      seconds: (performance.now() - started) / 1000,
      warnings: await checkRootfs(entriesLookup(written)),
    };
  } finally {
    for (const p of cleanup) await Deno.remove(p).catch(() => {});
  }
}
