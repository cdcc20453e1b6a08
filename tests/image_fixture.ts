/**
 * The deployable images, built once per test process (and reused across
 * runs) with buildah from the shipped `Dockerfile` and
 * `vault-proxy.Dockerfile`: the base image the `FROM` lines name is made
 * from the tests' cached Debian minbase (no registry here), the build takes
 * this host's package registries as build arguments (and its CA bundle as
 * the `registry_ca` secret when npm is configured with one), and each image
 * is tagged by a hash of what goes into it, so an unchanged tree rebuilds
 * nothing and a changed source rebuilds only the layers after `COPY src`.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { join } from "node:path";
import { CACHE_DIR, ensureMinbase } from "./provision_fixture.ts";
import { BASE_IMAGE, ensureBaseImage, hasImage } from "../tools/base_images.ts";
import { ROOT } from "./harness.ts";

/** One built image. */
export interface BuiltImage {
  /** buildah store name, e.g. `localhost/fly-vault:src-0123456789ab`. */
  name: string;
  /** What flysim's `config.image` names it as. */
  ref: string;
  /** buildah's image id. */
  id: string;
  /** Seconds the build took (0 when reused). */
  seconds: number;
  reused: boolean;
}

async function run(cmd: string, args: string[], cwd?: string): Promise<string> {
  const r = await new Deno.Command(cmd, { args, cwd, stdout: "piped", stderr: "piped" }).output();
  const dec = new TextDecoder();
  if (!r.success) {
    throw new Error(`${cmd} ${args.join(" ")} failed: ${dec.decode(r.stderr).slice(-2000)}`);
  }
  return dec.decode(r.stdout).trim();
}

/** The host's Debian mirrors (main and security) as apt is configured here. */
async function debianMirrors(): Promise<{ main: string; security: string }> {
  let main = "http://deb.debian.org/debian";
  let security = "http://deb.debian.org/debian-security";
  const files = ["/etc/apt/sources.list"];
  try {
    for await (const e of Deno.readDir("/etc/apt/sources.list.d")) {
      if (e.name.endsWith(".sources") || e.name.endsWith(".list")) {
        files.push(`/etc/apt/sources.list.d/${e.name}`);
      }
    }
  } catch { /* no such directory */ }
  for (const f of files) {
    const text = await Deno.readTextFile(f).catch(() => "");
    for (
      const m of text.matchAll(/^(?:URIs:\s*(\S+)|deb\s+(?:\[[^\]]*\]\s+)?(\S+))/gm)
    ) {
      const uri = m[1] ?? m[2];
      if (uri.includes("security")) security = uri;
      else if (uri.includes("debian")) main = uri;
    }
  }
  return { main, security };
}

/** The host's npm registry and the CA file npm trusts (when it is configured with one). */
async function npmSettings(): Promise<{ registry: string; cafile?: string }> {
  const get = (key: string) =>
    run("npm", ["config", "get", key]).catch(() => "").then((v) =>
      v === "undefined" || v === "null" ? "" : v
    );
  const registry = (await get("registry")) || "https://registry.npmjs.org/";
  const cafile = (await get("cafile")) || Deno.env.get("NODE_EXTRA_CA_CERTS") || "";
  const usable = cafile && await Deno.stat(cafile).then((s) => s.isFile, () => false);
  return usable ? { registry, cafile } : { registry };
}

/** Files that go into the images (the Dockerfiles' COPY lines, less .dockerignore's). */
async function contextFiles(): Promise<string[]> {
  const out = ["package.json", "package-lock.json", "deno.json"];
  const walk = async (dir: string) => {
    for await (const e of Deno.readDir(join(ROOT, dir))) {
      const rel = `${dir}/${e.name}`;
      if (e.isDirectory) await walk(rel);
      else if (e.isFile && !e.name.endsWith("_test.ts")) out.push(rel);
    }
  };
  await walk("bin");
  await walk("src");
  return out.sort();
}

async function treeHash(dockerfile: string): Promise<string> {
  const h = createHash("sha256");
  for (const f of [dockerfile, ".dockerignore", ...await contextFiles()]) {
    h.update(`${f}\0`);
    h.update(await Deno.readFile(join(ROOT, f)));
    h.update("\0");
  }
  return h.digest("hex").slice(0, 12);
}

async function buildOne(dockerfile: string, repo: string): Promise<BuiltImage> {
  const name = `${repo}:src-${await treeHash(dockerfile)}`;
  const lock = await Deno.open(join(CACHE_DIR, ".images.lock"), { create: true, write: true });
  await lock.lock(true);
  try {
    let seconds = 0;
    const reused = await hasImage(name);
    if (!reused) {
      const mirrors = await debianMirrors();
      const npm = await npmSettings();
      const started = performance.now();
      await run("buildah", [
        "bud",
        "--isolation",
        "chroot",
        "--layers",
        "--quiet",
        "-f",
        dockerfile,
        "-t",
        name,
        "--build-arg",
        `DEBIAN_MIRROR=${mirrors.main}`,
        "--build-arg",
        `DEBIAN_SECURITY_MIRROR=${mirrors.security}`,
        "--build-arg",
        `NPM_REGISTRY=${npm.registry}`,
        ...(npm.cafile ? ["--secret", `id=registry_ca,src=${npm.cafile}`] : []),
        ".",
      ], ROOT);
      seconds = (performance.now() - started) / 1000;
      // Older builds of this repo's tree: untag them so the store does not grow per change,
      // once no test run still started before could be using them.
      const stored = JSON.parse(await run("buildah", ["images", "--json"])) as {
        names?: string[] | null;
        created?: number;
      }[];
      for (const image of stored) {
        const old = Date.now() / 1000 - (image.created ?? Infinity) > 3600;
        for (const n of image.names ?? []) {
          if (old && n.startsWith(`${repo}:src-`) && n !== name) {
            await run("buildah", ["rmi", n]).catch(() => {});
          }
        }
      }
    }
    const id = await run("buildah", [
      "inspect",
      "--type",
      "image",
      "--format",
      "{{.FromImageID}}",
      name,
    ]);
    return { name, ref: `containers-storage:${name}`, id, seconds, reused };
  } finally {
    lock.close();
  }
}

/** Both images. */
export interface BuiltImages {
  base: string;
  /** Whether the base image was made now (from the minbase tarball). */
  baseMade: boolean;
  tenant: BuiltImage;
  proxy: BuiltImage;
}

let built: Promise<BuiltImages> | undefined;

/** Builds (or finds) both images once per process. */
export function builtImages(): Promise<BuiltImages> {
  return built ??= (async () => {
    await Deno.mkdir(CACHE_DIR, { recursive: true });
    const baseMade = await ensureBaseImage(await ensureMinbase());
    const tenant = await buildOne("Dockerfile", "localhost/fly-vault");
    const proxy = await buildOne("vault-proxy.Dockerfile", "localhost/vault-proxy");
    return { base: BASE_IMAGE, baseMade, tenant, proxy };
  })();
}

/** Where flysim unpacks images for the tests (kept between runs, pruned by age). */
export const IMAGE_CACHE = join(CACHE_DIR, "flysim-images");

/**
 * Removes unpacked images (a few hundred MB each; every source change makes
 * new ones) beyond the `keep` most recently used, sparing any used in the
 * last ten minutes (another test run may be booting it).
 */
export async function pruneUnpacked(keep = 4): Promise<void> {
  const entries: { path: string; used: number }[] = [];
  try {
    for await (const e of Deno.readDir(IMAGE_CACHE)) {
      if (!e.isDirectory || e.name.startsWith(".")) continue;
      const path = join(IMAGE_CACHE, e.name);
      entries.push({ path, used: (await Deno.stat(path)).mtime?.getTime() ?? 0 });
    }
  } catch { /* nothing unpacked yet */ }
  entries.sort((a, b) => b.used - a.used);
  for (const { path, used } of entries.slice(keep)) {
    if (Date.now() - used > 10 * 60_000) {
      await Deno.remove(path, { recursive: true }).catch(() => {});
    }
  }
}

/**
 * Sizes of an image: its unpacked root (`du`), its layers as a registry
 * stores them (compressed), and the base layer's share of those.
 */
export async function imageSizes(
  name: string,
  rootfs: string,
): Promise<{ unpackedBytes: number; pushBytes: number; baseBytes: number; layers: number }> {
  const dir = await Deno.makeTempDir({ prefix: "fv-image-size-" });
  try {
    await run("buildah", ["push", "--quiet", name, `oci:${dir}`]);
    const index = JSON.parse(await Deno.readTextFile(join(dir, "index.json")));
    const blob = (d: string) => join(dir, "blobs", ...d.split(":"));
    const manifest = JSON.parse(await Deno.readTextFile(blob(index.manifests[0].digest)));
    const layers = manifest.layers as { size: number; mediaType: string }[];
    if (!layers.every((l) => l.mediaType.endsWith("+gzip") || l.mediaType.endsWith(".gzip"))) {
      throw new Error(`expected gzip layers, got ${layers.map((l) => l.mediaType).join(", ")}`);
    }
    const du = await run("du", ["-sb", rootfs]);
    return {
      unpackedBytes: Number(du.split(/\s/)[0]),
      pushBytes: layers.reduce((a, l) => a + l.size, 0),
      baseBytes: layers[0].size,
      layers: layers.length,
    };
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}
