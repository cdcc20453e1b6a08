/**
 * The shipped Dockerfiles build here with buildah (the base image made
 * locally, this host's registries as build arguments), and each runtime
 * image holds what its program uses and nothing of the build: one Deno
 * binary from the npm registry, production dependencies only, no sources of
 * tests, no toolchain, no node. Each program starts from its image with the
 * network unplugged, so its first start fetches and compiles nothing.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { bootArgv, type UnpackedImage, unpackImage } from "../src/flysim/mod.ts";
import { builtImages, IMAGE_CACHE, imageSizes, pruneUnpacked } from "./image_fixture.ts";
import { ROOT } from "./harness.ts";

const exists = (p: string) => Deno.lstat(p).then(() => true, () => false);

/** Runs the image's entrypoint with `cmd` as Fly would, but in an empty network namespace. */
async function runOffline(image: UnpackedImage, cmd: string[]) {
  const dir = await Deno.makeTempDir({ prefix: "fv-image-run-" });
  try {
    await Deno.mkdir(join(dir, "volume"));
    await Deno.mkdir(join(dir, "fly"));
    const argv = await bootArgv({
      image,
      bootDir: join(dir, "boot"),
      volumeDir: join(dir, "volume"),
      socketDir: join(dir, "fly"),
      cmd,
    });
    const out = await new Deno.Command("unshare", {
      args: ["--net", "--", ...argv],
      env: { PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" },
      clearEnv: true,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const dec = new TextDecoder();
    return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

async function testFiles(root: string): Promise<string[]> {
  const found: string[] = [];
  const walk = async (dir: string) => {
    for await (const e of Deno.readDir(dir)) {
      if (e.isDirectory && e.name !== "node_modules") await walk(join(dir, e.name));
      else if (e.name.endsWith("_test.ts")) found.push(join(dir, e.name));
    }
  };
  await walk(root);
  return found;
}

const MB = 1e6;

Deno.test({
  name:
    "images: Dockerfile and vault-proxy.Dockerfile build with buildah; runtimes hold only what runs",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await pruneUnpacked();
    const images = await builtImages();
    const pkg = JSON.parse(await Deno.readTextFile(join(ROOT, "package.json")));
    const report: string[] = [];

    for (
      const [kind, built, program] of [
        ["tenant", images.tenant, "fly-vault-init.ts"],
        ["proxy", images.proxy, "vault-proxy.ts"],
      ] as const
    ) {
      const image = await unpackImage(built.ref, IMAGE_CACHE);
      const r = image.rootfs;
      assert.deepEqual(image.config.Entrypoint?.slice(-1), [`/app/bin/${program}`]);
      assert.ok(image.config.Entrypoint?.includes("--cached-only"), "starts from the cache only");
      assert.ok(
        image.config.Env?.includes("DENO_TLS_CA_STORE=system"),
        "https trusts the image's CAs",
      );

      // One Deno, the one package.json pins, installed by the build from the npm registry.
      assert.ok(await exists(join(r, "usr/local/bin/deno")));
      assert.equal(await exists(join(r, "app/node_modules/@deno")), false, "no second binary");
      assert.equal(await exists(join(r, "app/node_modules/deno")), false);
      const ver = await new Deno.Command("chroot", { args: [r, "/usr/local/bin/deno", "-V"] })
        .output();
      assert.equal(new TextDecoder().decode(ver.stdout).trim(), `deno ${pkg.dependencies.deno}`);

      // Production dependencies only; nothing of the build or of the developer's tree.
      for (const dev of Object.keys(pkg.devDependencies ?? {})) {
        assert.equal(await exists(join(r, "app/node_modules", dev)), false, `${dev} is dev-only`);
      }
      for (const absent of ["app/tests", "app/.git", "app/.state", "app/bench", "usr/bin/node"]) {
        assert.equal(await exists(join(r, absent)), false, `${absent} is not in the image`);
      }
      assert.deepEqual(await testFiles(join(r, "app")), [], "no test sources");
      assert.equal(await exists(join(r, "usr/bin/g++")), false, "no toolchain in the runtime");
      assert.ok((await Deno.stat(join(r, "etc/ssl/certs/ca-certificates.crt"))).size > 10_000);
      assert.ok(await exists(join(r, "app/.deno")), "Deno's cache was filled at build time");

      // The program starts with no network at all: nothing to fetch, nothing missing.
      const help = await runOffline(image, ["--help"]);
      assert.equal(help.code, 0, help.stderr);
      assert.match(help.stdout, /Usage:/);

      const sizes = await imageSizes(built.name, r);
      const above = sizes.pushBytes - sizes.baseBytes;
      report.push(
        `${kind} ${built.name}: ${(sizes.unpackedBytes / MB).toFixed(0)} MB unpacked, ` +
          `${(sizes.pushBytes / MB).toFixed(0)} MB compressed in ${sizes.layers} layers, ` +
          `${(above / MB).toFixed(0)} MB of them above the base; ` +
          (built.reused ? "reused" : `built in ${built.seconds.toFixed(0)} s`),
      );
      // Small: what we add to Debian is Deno (~40 MB compressed) and a little more.
      assert.ok(above < 80 * MB, report.at(-1));
    }

    // init's own needs: GNU tar, util-linux's namespace tools, its PTY addon.
    const tenant = await unpackImage(images.tenant.ref, IMAGE_CACHE);
    const t = tenant.rootfs;
    const tar = await new Deno.Command("chroot", { args: [t, "tar", "--version"] }).output();
    assert.match(new TextDecoder().decode(tar.stdout), /GNU tar/);
    for (const tool of ["unshare", "nsenter", "mount", "umount", "pivot_root", "chroot"]) {
      const found = await new Deno.Command("chroot", {
        args: [t, "sh", "-c", `command -v ${tool}`],
      })
        .output();
      assert.ok(found.success, `${tool} is in the tenant image`);
    }
    assert.ok(await exists(join(t, "app/node_modules/node-pty/build/Release/pty.node")));
    assert.equal(await exists(join(t, "app/node_modules/node-pty/prebuilds")), false);
    const proxy = await unpackImage(images.proxy.ref, IMAGE_CACHE);
    assert.equal(await exists(join(proxy.rootfs, "app/node_modules/node-pty")), false);

    console.log(`base ${images.base}${images.baseMade ? " (made from minbase now)" : ""}`);
    for (const line of report) console.log(line);
  },
});
