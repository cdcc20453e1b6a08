/**
 * Reading container images: an OCI image layout (directory or tar archive)
 * or a `docker save` tarball, down to an ordered list of layer blobs and the
 * image config's Entrypoint/Cmd/Env/WorkingDir/User.
 *
 * @module
 */
import { Readable } from "node:stream";
import { createGunzip } from "node:zlib";
import { VaultError } from "../errors/mod.ts";
import { TarReader } from "./tarstream.ts";

/** Random access to the files of an image (a directory or an outer tar). */
export interface ImageFiles {
  has(path: string): Promise<boolean>;
  read(path: string): Promise<Uint8Array>;
  stream(path: string): Promise<ReadableStream<Uint8Array>>;
  size(path: string): Promise<number>;
}

/** The workload declaration kept from the image config. */
export interface ImageDeclaration {
  Entrypoint?: string[] | null;
  Cmd?: string[] | null;
  Env?: string[] | null;
  WorkingDir?: string;
  User?: string;
}

/** A resolved image: layers bottom to top, and its declaration. */
export interface ResolvedImage {
  layers: { path: string; size: number }[];
  config: ImageDeclaration;
  format: "oci" | "docker-archive";
}

function clean(p: string): string {
  return p.replace(/^(\.\/|\/)+/, "");
}

/** Files of an image laid out in a directory. */
export function dirFiles(root: string): ImageFiles {
  const abs = (p: string) => `${root}/${clean(p)}`;
  return {
    has: (p) => Deno.stat(abs(p)).then((s) => s.isFile, () => false),
    read: (p) => Deno.readFile(abs(p)),
    size: (p) => Deno.stat(abs(p)).then((s) => s.size),
    stream: async (p) => (await Deno.open(abs(p))).readable,
  };
}

/** Files of an image inside an (uncompressed) tar archive, indexed once. */
export async function tarFiles(tarPath: string): Promise<ImageFiles> {
  const index = new Map<string, { offset: number; size: number }>();
  const f = await Deno.open(tarPath);
  const r = new TarReader(f.readable);
  for (;;) {
    const e = await r.next();
    if (!e) break;
    if (e.type === "0" || e.type === "7") index.set(e.path, { offset: r.position, size: e.size });
    await r.skip();
  }
  await r.cancel();
  const get = (p: string) => {
    const hit = index.get(clean(p));
    if (!hit) throw new VaultError("build.bad_image", `${p} is missing from ${tarPath}`);
    return hit;
  };
  const stream = async (p: string) => {
    const { offset, size } = get(p);
    const file = await Deno.open(tarPath);
    await file.seek(offset, Deno.SeekMode.Start);
    let left = size;
    return new ReadableStream<Uint8Array>({
      async pull(c) {
        if (left === 0) {
          file.close();
          return c.close();
        }
        const buf = new Uint8Array(Math.min(left, 1 << 20));
        const n = await file.read(buf);
        if (n === null) {
          file.close();
          return c.error(new VaultError("build.bad_image", `${tarPath} is truncated`));
        }
        left -= n;
        c.enqueue(buf.subarray(0, n));
      },
      cancel() {
        file.close();
      },
    });
  };
  return {
    has: (p) => Promise.resolve(index.has(clean(p))),
    size: (p) => Promise.resolve(get(p).size),
    stream,
    read: async (p) => new Uint8Array(await new Response(await stream(p)).arrayBuffer()),
  };
}

function json(bytes: Uint8Array, what: string): Record<string, unknown> {
  try {
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    throw new VaultError("build.bad_image", `${what} is not valid JSON`);
  }
}

function blobPath(digest: unknown): string {
  const m = typeof digest === "string" ? digest.match(/^([a-z0-9]+):([a-f0-9]{32,})$/) : null;
  if (!m) throw new VaultError("build.bad_image", `bad digest ${String(digest)}`);
  return `blobs/${m[1]}/${m[2]}`;
}

const ARCH: Record<string, string> = { x86_64: "amd64", aarch64: "arm64" };

type Descriptor = {
  mediaType?: string;
  digest?: string;
  platform?: { os?: string; architecture?: string };
};

async function pickManifest(
  files: ImageFiles,
  index: Record<string, unknown>,
): Promise<Record<string, unknown>> {
  const list = (index.manifests ?? []) as Descriptor[];
  if (list.length === 0) {
    throw new VaultError("build.bad_image", "the image index lists no manifest");
  }
  const arch = ARCH[Deno.build.arch] ?? Deno.build.arch;
  const chosen =
    list.find((d) => d.platform?.os === "linux" && d.platform?.architecture === arch) ??
      list.find((d) => !d.platform) ?? list[0];
  const body = json(await files.read(blobPath(chosen.digest)), "manifest");
  const mt = String(body.mediaType ?? chosen.mediaType ?? "");
  if (mt.includes("index") || mt.includes("manifest.list") || Array.isArray(body.manifests)) {
    return pickManifest(files, body);
  }
  return body;
}

function declaration(cfg: Record<string, unknown>): ImageDeclaration {
  const c = (cfg.config ?? cfg.container_config ?? {}) as Record<string, unknown>;
  const strings = (v: unknown) =>
    Array.isArray(v) && v.every((x) => typeof x === "string") ? v as string[] : null;
  const out: ImageDeclaration = {};
  if (strings(c.Entrypoint)) out.Entrypoint = strings(c.Entrypoint);
  if (strings(c.Cmd)) out.Cmd = strings(c.Cmd);
  if (strings(c.Env)) out.Env = strings(c.Env);
  if (typeof c.WorkingDir === "string" && c.WorkingDir) out.WorkingDir = c.WorkingDir;
  if (typeof c.User === "string" && c.User) out.User = c.User;
  return out;
}

/** Finds the layers and config of an OCI layout or a docker-save archive. */
export async function resolveImage(files: ImageFiles): Promise<ResolvedImage> {
  if (await files.has("manifest.json")) {
    const list = JSON.parse(new TextDecoder().decode(await files.read("manifest.json")));
    const m = Array.isArray(list) ? list[0] : null;
    if (!m || typeof m.Config !== "string" || !Array.isArray(m.Layers)) {
      throw new VaultError("build.bad_image", "manifest.json is not a docker save manifest");
    }
    const layers = [];
    for (const p of m.Layers as string[]) layers.push({ path: p, size: await files.size(p) });
    return {
      layers,
      config: declaration(json(await files.read(m.Config), "image config")),
      format: "docker-archive",
    };
  }
  if (await files.has("index.json")) {
    const manifest = await pickManifest(files, json(await files.read("index.json"), "index.json"));
    const config = manifest.config as Descriptor | undefined;
    const layerDescs = (manifest.layers ?? []) as Descriptor[];
    const layers = [];
    for (const d of layerDescs) {
      const p = blobPath(d.digest);
      layers.push({ path: p, size: await files.size(p) });
    }
    return {
      layers,
      config: config ? declaration(json(await files.read(blobPath(config.digest)), "config")) : {},
      format: "oci",
    };
  }
  throw new VaultError(
    "build.unknown_image",
    "not an OCI image layout (index.json) nor a docker save archive (manifest.json)",
    "pass a directory, an OCI layout, a `docker save` tarball or a Dockerfile",
  );
}

/** A layer blob as an uncompressed tar stream (gzip, zstd or plain, by magic). */
export async function layerTar(
  stream: ReadableStream<Uint8Array>,
): Promise<ReadableStream<Uint8Array>> {
  const reader = stream.getReader();
  let first: Uint8Array | undefined;
  while (!first) {
    const r = await reader.read();
    if (r.done) return new ReadableStream({ start: (c) => c.close() });
    if (r.value.length) first = r.value;
  }
  const head = first;
  const rest = new ReadableStream<Uint8Array>({
    start(c) {
      c.enqueue(head);
    },
    async pull(c) {
      const r = await reader.read();
      if (r.done) c.close();
      else c.enqueue(r.value);
    },
    cancel: (why) => reader.cancel(why),
  });
  if (head[0] === 0x1f && head[1] === 0x8b) {
    const gunzip = Readable.fromWeb(rest as never).pipe(createGunzip());
    return Readable.toWeb(gunzip) as unknown as ReadableStream<Uint8Array>;
  }
  if (head[0] === 0x28 && head[1] === 0xb5 && head[2] === 0x2f && head[3] === 0xfd) {
    const z = new Deno.Command("zstd", { args: ["-dc"], stdin: "piped", stdout: "piped" }).spawn();
    rest.pipeTo(z.stdin).catch(() => {});
    return z.stdout;
  }
  return rest;
}
