/**
 * Container images as flysim machines run them: a machine whose
 * `config.image` is a locally built image — `oci:DIR[:TAG]` (an OCI image
 * layout) or `containers-storage:NAME` (buildah's or podman's store; no
 * registry needed) — gets that image unpacked once (an OCI layout's layers
 * merged with whiteouts applied by `fly-vault build`'s reader; a stored
 * image copied from buildah's mount of it; cached by the layers' digests)
 * and is booted on a fresh copy-on-write root each start, as Fly boots a
 * fresh root filesystem from the image each time.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { join } from "node:path";
import { buildRootfs, type ImageDeclaration, resolveImage } from "../build/mod.ts";
import { VaultError } from "../errors/mod.ts";

/** An image unpacked into a directory tree, ready to be a machine's lower root. */
export interface UnpackedImage {
  /** The reference it was unpacked from. */
  ref: string;
  /** sha256 of the ordered layer digests: equal layers, one unpacked tree. */
  key: string;
  /** The merged root filesystem (read-only by convention: machines overlay it). */
  rootfs: string;
  /** Entrypoint, Cmd, Env, WorkingDir, User from the image config. */
  config: ImageDeclaration;
}

const TRANSPORTS = ["oci:", "containers-storage:"];

/** Whether flysim runs `image` as a container image (else: the repo's init on the host). */
export function isLocalImage(image: string): boolean {
  return TRANSPORTS.some((t) => image.startsWith(t));
}

async function run(cmd: string, args: string[]): Promise<string> {
  const r = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output()
    .catch((err) => {
      throw new VaultError(
        "flysim.image_tool",
        `${cmd} failed to start: ${(err as Error).message}`,
        cmd === "buildah" ? "install buildah (Debian package `buildah`)" : "",
      );
    });
  if (!r.success) {
    throw new VaultError(
      "flysim.image_tool",
      `${cmd} ${args.join(" ")} failed: ${new TextDecoder().decode(r.stderr).trim().slice(-400)}`,
    );
  }
  return new TextDecoder().decode(r.stdout);
}

/** Reads an OCI layout directory as `resolveImage` wants it. */
function layoutFiles(dir: string) {
  const abs = (p: string) => join(dir, p.replace(/^(\.\/|\/)+/, ""));
  return {
    has: (p: string) => Deno.stat(abs(p)).then((s) => s.isFile, () => false),
    read: (p: string) => Deno.readFile(abs(p)),
    size: (p: string) => Deno.stat(abs(p)).then((s) => s.size),
    stream: async (p: string) => (await Deno.open(abs(p))).readable,
  };
}

/**
 * Makes `dir` a layout holding only the manifest tagged `tag` (an OCI layout
 * may hold several images; `resolveImage` reads the first that fits).
 */
async function narrowLayout(src: string, tag: string, dir: string): Promise<void> {
  const index = JSON.parse(await Deno.readTextFile(join(src, "index.json")));
  const manifests = (index.manifests ?? []) as { annotations?: Record<string, string> }[];
  const hit = manifests.filter((d) => d.annotations?.["org.opencontainers.image.ref.name"] === tag);
  if (hit.length === 0) {
    throw new VaultError("flysim.image_not_found", `no image tagged ${tag} in ${src}`);
  }
  await Deno.mkdir(dir, { recursive: true });
  await Deno.symlink(join(src, "blobs"), join(dir, "blobs"));
  await Deno.writeTextFile(join(dir, "oci-layout"), '{"imageLayoutVersion":"1.0.0"}');
  await Deno.writeTextFile(join(dir, "index.json"), JSON.stringify({ ...index, manifests: hit }));
}

/** The OCI layout an `oci:` ref names (narrowed to its tag). `scratch` is private and empty. */
async function layoutOf(ref: string, scratch: string): Promise<string> {
  const spec = ref.slice("oci:".length);
  // oci:DIR or oci:DIR:TAG (a tag has no slash; a directory may contain colons only before one).
  const colon = spec.lastIndexOf(":");
  if (colon > spec.lastIndexOf("/")) {
    const dir = join(scratch, "layout");
    await narrowLayout(spec.slice(0, colon), spec.slice(colon + 1), dir);
    return dir;
  }
  return spec;
}

/** What buildah knows of an image in its store, without exporting it. */
async function inspectStored(name: string): Promise<{ key: string; config: ImageDeclaration }> {
  const out = JSON.parse(await run("buildah", ["inspect", "--type", "image", name]));
  const oci = out?.OCIv1 ?? {};
  const diffIds = oci.rootfs?.diff_ids;
  if (!Array.isArray(diffIds) || diffIds.some((d) => typeof d !== "string")) {
    throw new VaultError("flysim.bad_image", `buildah reports no layers for ${name}`);
  }
  const c = oci.config ?? {};
  const strings = (v: unknown) =>
    Array.isArray(v) && v.every((x) => typeof x === "string") ? v as string[] : undefined;
  const config: ImageDeclaration = {};
  if (strings(c.Entrypoint)) config.Entrypoint = strings(c.Entrypoint);
  if (strings(c.Cmd)) config.Cmd = strings(c.Cmd);
  if (strings(c.Env)) config.Env = strings(c.Env);
  if (typeof c.WorkingDir === "string" && c.WorkingDir) config.WorkingDir = c.WorkingDir;
  if (typeof c.User === "string" && c.User) config.User = c.User;
  return { key: layersKey(diffIds.map((d: string) => `uncompressed ${d}`)), config };
}

function layersKey(layers: string[]): string {
  return createHash("sha256").update(layers.join("\n")).digest("hex");
}

/** Copies an image's root out of containers-storage (a throwaway working container's mount). */
async function copyFromStore(ref: string, dest: string): Promise<void> {
  const name = ref.slice("containers-storage:".length);
  const ctr = await run("buildah", ["from", "--pull=never", "--quiet", name]);
  try {
    const mnt = await run("buildah", ["mount", ctr.trim()]);
    // cp -a keeps owners, modes, links, hard links and xattrs (file capabilities included).
    await run("cp", ["-a", `${mnt.trim()}/.`, dest]);
  } finally {
    await run("buildah", ["rm", ctr.trim()]).catch(() => {});
  }
}

/**
 * Unpacks `ref` under `cacheDir` (once per distinct layer set; concurrent
 * callers, even in other processes, wait for the one unpacking) and returns
 * it. An image in containers-storage is copied from buildah's mount of it
 * (and not at all when its layers are unpacked already: a retag or a label
 * change boots at once); an OCI layout goes through `fly-vault build`'s
 * layer merging.
 */
export async function unpackImage(ref: string, cacheDir: string): Promise<UnpackedImage> {
  if (!isLocalImage(ref)) {
    throw new VaultError(
      "flysim.image_not_local",
      `${ref} is not a local image`,
      "use oci:DIR[:TAG] or containers-storage:NAME",
    );
  }
  await Deno.mkdir(cacheDir, { recursive: true });
  const stored = ref.startsWith("containers-storage:")
    ? await inspectStored(ref.slice("containers-storage:".length))
    : undefined;
  const lock = await Deno.open(join(cacheDir, ".lock"), { create: true, write: true });
  await lock.lock(true);
  const scratch = await Deno.makeTempDir({ dir: cacheDir, prefix: ".scratch-" });
  try {
    const tmp = join(scratch, "rootfs");
    let key: string;
    let config: ImageDeclaration;
    if (stored) {
      ({ key, config } = stored);
      // buildah's own mount of the image is the merged root already: a copy is the unpacking.
      if (!await exists(join(cacheDir, key, "rootfs"))) await copyFromStore(ref, tmp);
    } else {
      const layout = await layoutOf(ref, scratch);
      const image = await resolveImage(layoutFiles(layout));
      key = layersKey(image.layers.map((l) => l.path));
      config = image.config;
      if (!await exists(join(cacheDir, key, "rootfs"))) {
        // fly-vault build merges the layers (whiteouts, numeric owners, xattrs) into one tar.
        const tar = join(scratch, "rootfs.tar.gz");
        await buildRootfs({ source: layout, kind: "image", output: tar });
        await Deno.mkdir(tmp);
        await run("tar", [
          "--numeric-owner",
          "--xattrs",
          "--xattrs-include=*",
          "-xpzf",
          tar,
          "-C",
          tmp,
        ]);
        // The build records the workload declaration for tenant rootfs; a machine root has none.
        await Deno.remove(join(tmp, ".fly-vault"), { recursive: true }).catch(() => {});
      }
    }
    const rootfs = join(cacheDir, key, "rootfs");
    if (await exists(tmp)) {
      await Deno.mkdir(join(cacheDir, key), { recursive: true });
      await Deno.rename(tmp, rootfs);
    }
    // Marks it used, so pruning by use keeps what machines still boot.
    await Deno.utime(join(cacheDir, key), new Date(), new Date()).catch(() => {});
    return { ref, key, rootfs, config };
  } finally {
    lock.close();
    await Deno.remove(scratch, { recursive: true }).catch(() => {});
  }
}

function exists(path: string): Promise<boolean> {
  return Deno.stat(path).then(() => true, () => false);
}

/** The argv an image runs: Entrypoint then Cmd (Fly's `config.init` overrides are not modelled). */
export function imageArgv(config: ImageDeclaration): string[] {
  const argv = [...(config.Entrypoint ?? []), ...(config.Cmd ?? [])];
  if (argv.length === 0) {
    throw new VaultError("flysim.image_no_command", "the image declares no Entrypoint or Cmd");
  }
  return argv;
}

/** The image's `Env` (`K=V` lines) as a record. */
export function imageEnv(config: ImageDeclaration): Record<string, string> {
  const env: Record<string, string> = {};
  for (const line of config.Env ?? []) {
    const eq = line.indexOf("=");
    if (eq > 0) env[line.slice(0, eq)] = line.slice(eq + 1);
  }
  return env;
}

/**
 * The shell script (run under `unshare --mount --propagation private`) that
 * boots a machine from an unpacked image as Fly's init does: a fresh
 * writable root over the image, /proc, /dev and /sys, the volume at its
 * mount path, the token socket's directory at /.fly, then `pivot_root`
 * into it and exec the image's command. Positional parameters:
 * `$1` lower, `$2` upper, `$3` work, `$4` merged root, `$5` volume dir,
 * `$6` mount path, `$7` socket dir, `$8` working dir, then the argv.
 */
export const BOOT_SCRIPT = `set -eu
lower=$1 upper=$2 work=$3 root=$4 volume=$5 mountpath=$6 sockdir=$7 cwd=$8
shift 8
# The host's tools do the mounting; the image's command gets the machine's PATH back.
machine_path=$PATH
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t overlay overlay -o "lowerdir=$lower,upperdir=$upper,workdir=$work" "$root"
mkdir -p "$root/proc" "$root/dev" "$root/sys" "$root/tmp" "$root/.fly" "$root$mountpath"
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
mount --rbind /sys "$root/sys"
mount --bind "$volume" "$root$mountpath"
mount --bind "$sockdir" "$root/.fly"
if [ -f /etc/resolv.conf ]; then cat /etc/resolv.conf > "$root/etc/resolv.conf" 2>/dev/null || true; fi
cd "$root"
# The machine's root becomes the image's, as on a Fly VM (init's own vault namespace
# pivot_roots again inside it). \`pivot_root . .\` stacks the host's root over the new one,
# where no path lookup reaches it, so the image needs no tool of its own to boot.
pivot_root . .
cd /
cd "$cwd"
PATH=$machine_path
export PATH
exec "$@"
`;

/** Where one boot of an image lives and what it is given. */
export interface BootPlan {
  image: UnpackedImage;
  /** A fresh, empty directory for this boot's writable layer and mount point. */
  bootDir: string;
  /** The volume's directory. */
  volumeDir: string;
  /** Where the machine sees the volume (default /data). */
  mountPath?: string;
  /** Mounted at /.fly (the token socket is `api` in it). */
  socketDir: string;
  /** Replaces the image's Cmd (Entrypoint kept), as `config.init.cmd` does on Fly. */
  cmd?: string[];
}

/**
 * The argv (run as root, with the machine's env) that boots an image:
 * `unshare --mount --propagation private` then {@link BOOT_SCRIPT}. Its pid
 * ends up being the image's own process, so signals reach it directly.
 */
export async function bootArgv(plan: BootPlan): Promise<string[]> {
  for (const sub of ["upper", "work", "root"]) {
    await Deno.mkdir(join(plan.bootDir, sub), { recursive: true });
  }
  const config = plan.cmd ? { ...plan.image.config, Cmd: plan.cmd } : plan.image.config;
  return [
    "unshare",
    "--mount",
    "--propagation",
    "private",
    "--",
    "/bin/sh",
    "-c",
    BOOT_SCRIPT,
    "flysim-boot",
    plan.image.rootfs,
    join(plan.bootDir, "upper"),
    join(plan.bootDir, "work"),
    join(plan.bootDir, "root"),
    plan.volumeDir,
    plan.mountPath ?? "/data",
    plan.socketDir,
    plan.image.config.WorkingDir ?? "/",
    ...imageArgv(config),
  ];
}
