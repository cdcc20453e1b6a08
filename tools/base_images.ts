/**
 * Makes the base image the Dockerfiles' `FROM` lines name
 * (`docker.io/library/debian:bookworm-slim`) in buildah's local store from
 * a Debian root filesystem tarball, for machines that reach no image
 * registry (as this project's test machines): `buildah from scratch`, add
 * the tarball, set PATH and a shell as the command, commit under the name.
 * An image already stored under that name (a real pull included) is kept.
 *
 *   deno run -A tools/base_images.ts /var/cache/fly-vault-test/minbase.tar.gz
 *
 * The tarball is any Debian bookworm root (the tests use their cached
 * `debootstrap --variant=minbase bookworm`, see tests/provision_fixture.ts).
 *
 * @module
 */

/** The one base image both Dockerfiles build from (their `DEBIAN_IMAGE` default). */
export const BASE_IMAGE = "docker.io/library/debian:bookworm-slim";

async function buildah(args: string[]): Promise<{ ok: boolean; out: string; err: string }> {
  const r = await new Deno.Command("buildah", { args, stdout: "piped", stderr: "piped" }).output();
  const dec = new TextDecoder();
  return { ok: r.success, out: dec.decode(r.stdout).trim(), err: dec.decode(r.stderr).trim() };
}

async function must(args: string[]): Promise<string> {
  const r = await buildah(args);
  if (!r.ok) throw new Error(`buildah ${args.join(" ")} failed: ${r.err.slice(-600)}`);
  return r.out;
}

/** Whether buildah's store holds an image under `name`. */
export async function hasImage(name: string): Promise<boolean> {
  return (await buildah(["inspect", "--type", "image", "--format", "{{.FromImageID}}", name])).ok;
}

/**
 * Stores `rootfsTarball` as {@link BASE_IMAGE} unless an image of that name
 * exists. Returns whether it made one.
 */
export async function ensureBaseImage(
  rootfsTarball: string,
  name = BASE_IMAGE,
): Promise<boolean> {
  if (await hasImage(name)) return false;
  const ctr = await must(["from", "--quiet", "scratch"]);
  try {
    // buildah add unpacks a local tar archive (gzip too) at the destination.
    await must(["add", "--quiet", ctr, rootfsTarball, "/"]);
    await must([
      "config",
      "--env",
      "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
      "--cmd",
      '["bash"]',
      "--label",
      `org.opencontainers.image.description=local stand-in for ${name}`,
      ctr,
    ]);
    await must(["commit", "--quiet", "--rm", ctr, name]);
  } catch (err) {
    await buildah(["rm", ctr]);
    throw err;
  }
  return true;
}

if (import.meta.main) {
  const [tarball] = Deno.args;
  if (!tarball) {
    console.error("usage: deno run -A tools/base_images.ts ROOTFS.tar[.gz]");
    Deno.exit(2);
  }
  const made = await ensureBaseImage(tarball);
  console.log(made ? `stored ${BASE_IMAGE}` : `${BASE_IMAGE} already stored; kept`);
}
