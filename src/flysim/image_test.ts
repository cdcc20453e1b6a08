/**
 * flysim booting an image: a small OCI layout (the host-program rootfs as
 * one layer, two tags) run through the real launcher. The machine sees its
 * image's root (not the host's), its WorkingDir and Env under the config's
 * env, the volume at the mount path, the token socket at /.fly/api, /proc;
 * each boot starts from a fresh root and keeps its private address.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { buildHostRootfs } from "./host_rootfs.ts";
import { imageArgv, imageEnv, isLocalImage, unpackImage } from "./image.ts";
import { startOidcIssuer } from "./oidc.ts";
import { createInitLauncher } from "./runner.ts";

const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

/** The machine's command: record what it sees in the volume, then say it is listening. */
const SCRIPT = `
{
  echo "pwd=$(pwd)"
  echo "tag=$TAG from=$FROM_IMAGE machine=$MACHINE_ENV id=$FLY_MACHINE_ID"
  [ -S /.fly/api ] && echo "socket=yes"
  [ -r /proc/self/status ] && echo "proc=yes"
  [ -e /work ] || [ -e /etc/debian_version ] && echo "host=visible" || echo "host=hidden"
  [ -e /boot-marker ] && echo "root=stale" || echo "root=fresh"
} > /data/facts-$BOOT
touch /boot-marker
echo '{"msg":"init.listening"}' >&2
exec sleep 1000
`;

async function writeLayout(dir: string, rootfs: string): Promise<void> {
  const blobs = join(dir, "blobs", "sha256");
  await Deno.mkdir(blobs, { recursive: true });
  const put = async (bytes: Uint8Array) => {
    const d = sha(bytes);
    await Deno.writeFile(join(blobs, d), bytes);
    return { digest: `sha256:${d}`, size: bytes.length };
  };
  const tar = await new Deno.Command("tar", {
    args: ["--numeric-owner", "-cf", "-", "-C", rootfs, "."],
    stdout: "piped",
  }).output();
  assert.ok(tar.success);
  const layer = await put(tar.stdout);
  const manifests = [];
  for (const tag of ["v1", "v2"]) {
    const config = await put(new TextEncoder().encode(JSON.stringify({
      architecture: "amd64",
      os: "linux",
      config: {
        Env: ["PATH=/usr/local/bin:/usr/bin:/bin", `TAG=${tag}`, "FROM_IMAGE=yes", "MACHINE_ENV=x"],
        Entrypoint: ["/bin/sh", "-c"],
        Cmd: [SCRIPT],
        WorkingDir: "/tmp",
      },
      rootfs: { type: "layers", diff_ids: [layer.digest] },
    })));
    const manifest = await put(new TextEncoder().encode(JSON.stringify({
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: { mediaType: "application/vnd.oci.image.config.v1+json", ...config },
      layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar", ...layer }],
    })));
    manifests.push({
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      ...manifest,
      annotations: { "org.opencontainers.image.ref.name": tag },
    });
  }
  await Deno.writeTextFile(join(dir, "oci-layout"), '{"imageLayoutVersion":"1.0.0"}');
  await Deno.writeTextFile(
    join(dir, "index.json"),
    JSON.stringify({ schemaVersion: 2, manifests }),
  );
}

Deno.test("image refs, argv and env", () => {
  assert.ok(isLocalImage("oci:/x/y:v1"));
  assert.ok(isLocalImage("containers-storage:localhost/fly-vault:t"));
  assert.ok(!isLocalImage("registry.fly.io/vault-tenants/init:latest"));
  assert.deepEqual(imageArgv({ Entrypoint: ["/a"], Cmd: ["b", "c"] }), ["/a", "b", "c"]);
  assert.deepEqual(imageArgv({ Cmd: ["b"] }), ["b"]);
  assert.throws(() => imageArgv({}), /no Entrypoint or Cmd/);
  assert.deepEqual(imageEnv({ Env: ["A=1", "B=x=y", "bad"] }), { A: "1", B: "x=y" });
});

Deno.test({
  name: "flysim boots an OCI image: its root, env, volume, token socket; a fresh root per boot",
  ignore: Deno.uid() !== 0,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "fv-flysim-image-" });
    const issuer = await startOidcIssuer({ hostname: "127.0.0.1", port: 0 });
    try {
      const rootfs = join(dir, "rootfs");
      await buildHostRootfs(rootfs);
      const layout = join(dir, "layout");
      await writeLayout(layout, rootfs);
      const cache = join(dir, "cache");
      const launcher = createInitLauncher({
        issuer,
        runDir: join(dir, "run"),
        imageCacheDir: cache,
      });
      const volume = join(dir, "volume");
      await Deno.mkdir(volume);
      const boot = async (tag: string, n: number) => {
        const m = await launcher.start({
          id: "img0001",
          name: "img",
          app: "app",
          org: "org",
          region: "ord",
          image: `oci:${layout}:${tag}`,
          env: { MACHINE_ENV: "wins", BOOT: String(n) },
          volumeDir: volume,
          mountPath: "/data",
        });
        const facts = await Deno.readTextFile(join(volume, `facts-${n}`));
        await m.stop();
        return { m, facts };
      };
      const first = await boot("v1", 1);
      assert.equal(
        first.facts,
        "pwd=/tmp\ntag=v1 from=yes machine=wins id=img0001\nsocket=yes\nproc=yes\n" +
          "host=hidden\nroot=fresh\n",
      );
      const second = await boot("v2", 2);
      assert.match(second.facts, /tag=v2 /, "the tag picks the image");
      assert.match(second.facts, /root=fresh/, "the last boot's writes are gone");
      assert.equal(second.m.privateIp, first.m.privateIp, "same address after a restart");
      // Both tags share the layer: unpacked once; the unpacked tree never saw a boot's writes.
      const unpacked = await unpackImage(`oci:${layout}:v1`, cache);
      const entries = [];
      for await (const e of Deno.readDir(cache)) if (!e.name.startsWith(".")) entries.push(e);
      assert.equal(entries.length, 1);
      assert.equal(await Deno.stat(join(unpacked.rootfs, "boot-marker")).catch(() => null), null);
      await assert.rejects(
        unpackImage(`oci:${layout}:v3`, cache),
        /no image tagged v3/,
      );
    } finally {
      await issuer.close();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
