/**
 * The whole chain through the deployable images: flysim runs the tenant
 * image built from `Dockerfile` (unpacked, booted in its own mount
 * namespace with the volume at /data and the token socket at /.fly/api) and
 * vault-proxy from `vault-proxy.Dockerfile`. The real `fly-vault-admin`
 * creates the tenant; the real client goes through the proxy by machine id:
 * provisioning on first connect, exec, a console, a forward, a reprovision
 * that keeps /root and /home, `update-image` to a second image (the machine
 * restarts on it, /root kept, the client re-attests by itself), usage facts,
 * and a delete that leaves no machine and no volume.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  bootArgv,
  createInitLauncher,
  type LaunchedMachine,
  type SimLauncher,
  startMachinesApi,
  startOidcIssuer,
  unpackImage,
} from "../src/flysim/mod.ts";
import { hasImage } from "../tools/base_images.ts";
import { builtImages, IMAGE_CACHE } from "./image_fixture.ts";
import { admin, APP, template, tenantState, TOKEN } from "./admin_helpers.ts";
import { hostRootfsTemplate, ROOT } from "./harness.ts";
import { outerTerminal } from "./console_term.ts";

const ORG = "image-org";
const ACCESS = "image-e2e-access-token-0123456789abcdefghij";
const PROMPT = /root@vault:[^\r\n]*[#$] $/;

async function sh(cmd: string, args: string[]): Promise<string> {
  const r = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  if (!r.success) throw new Error(`${cmd} failed: ${new TextDecoder().decode(r.stderr)}`);
  return new TextDecoder().decode(r.stdout).trim();
}

/** A second tag of the tenant image: same layers, its own config (as a rebuilt release would). */
async function nextImage(name: string): Promise<string> {
  const next = `${name}-next`;
  if (await hasImage(next)) return next;
  const ctr = await sh("buildah", ["from", "--quiet", name]);
  try {
    await sh("buildah", ["config", "--label", "fly-vault.release=next", ctr]);
    await sh("buildah", ["commit", "--quiet", ctr, next]);
  } finally {
    await sh("buildah", ["rm", ctr]).catch(() => {});
  }
  return next;
}

/** JSON lines of a child's stdout; `next(pred)` waits (bounded by the test's deadline). */
function jsonLines(stream: ReadableStream<Uint8Array>) {
  const seen: Record<string, unknown>[] = [];
  let wake: (() => void) | undefined;
  let ended = false;
  (async () => {
    let buf = "";
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      buf += chunk;
      let i;
      while ((i = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        try {
          seen.push(JSON.parse(line));
        } catch { /* not a log line */ }
        wake?.();
      }
    }
    ended = true;
    wake?.();
  })();
  return {
    async next(pred: (l: Record<string, unknown>) => boolean, ms = 60_000) {
      const deadline = Date.now() + ms;
      while (true) {
        const hit = seen.find(pred);
        if (hit) return hit;
        if (ended || Date.now() > deadline) {
          throw new Error(`no such line; saw ${JSON.stringify(seen).slice(-2000)}`);
        }
        await new Promise<void>((r) => {
          wake = r;
          setTimeout(r, deadline - Date.now());
        });
      }
    },
  };
}

async function lineMatching(stream: ReadableStream<Uint8Array>, re: RegExp): Promise<void> {
  let text = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    text += chunk;
    if (re.test(text)) return;
  }
  throw new Error(`stream ended without ${re}: ${text}`);
}

async function tarball(dir: string, path: string): Promise<void> {
  await sh("tar", ["-czf", path, "--numeric-owner", "-C", dir, "."]);
}

Deno.test({
  name:
    "images e2e: admin create → proxy → provision, exec, console, forward → update-image → delete",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const images = await builtImages();
    const v1 = images.tenant.ref;
    const v2 = `containers-storage:${await nextImage(images.tenant.name)}`;
    // Unpacked before the Machines API waits on a start (once per layer set, kept between runs).
    const proxyImage = await unpackImage(images.proxy.ref, IMAGE_CACHE);
    await unpackImage(v1, IMAGE_CACHE);

    const dir = await Deno.makeTempDir({ prefix: "fv-image-e2e-" });
    const issuer = await startOidcIssuer({ hostname: "127.0.0.1", port: 0 });
    const real = createInitLauncher({
      issuer,
      runDir: join(dir, "run"),
      imageCacheDir: IMAGE_CACHE,
    });
    const launches: { id: string; image: string; machine: LaunchedMachine }[] = [];
    const launcher: SimLauncher = {
      async start(m) {
        const machine = await real.start(m);
        launches.push({ id: m.id, image: m.image, machine });
        return machine;
      },
    };
    const api = startMachinesApi({
      hostname: "127.0.0.1",
      port: 0,
      token: TOKEN,
      launcher,
      dataDir: dir,
      org: ORG,
    });
    const sim = Object.assign(api, { dir });

    // vault-proxy from its image, resolving machines through flysim's Machines API.
    await Deno.mkdir(join(dir, "proxy", "volume"), { recursive: true });
    await Deno.mkdir(join(dir, "proxy", "fly"), { recursive: true });
    const proxyArgv = await bootArgv({
      image: proxyImage,
      bootDir: join(dir, "proxy", "boot"),
      volumeDir: join(dir, "proxy", "volume"),
      socketDir: join(dir, "proxy", "fly"),
      cmd: ["--listen", "127.0.0.1:0", "--machines-api", api.baseUrl, "--app", APP],
    });
    const proxy = new Deno.Command(proxyArgv[0], {
      args: proxyArgv.slice(1),
      env: {
        PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        FLY_API_TOKEN: TOKEN,
      },
      clearEnv: true,
      stdin: "null",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const proxyLog = jsonLines(proxy.stdout);

    const echo = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const serving = (async () => {
      for await (const conn of echo) conn.readable.pipeTo(conn.writable).catch(() => {});
    })();
    let forward: Deno.ChildProcess | undefined;
    const term = outerTerminal({ FLY_VAULT_CONFIG_DIR: join(dir, "client") });
    try {
      const listening = await proxyLog.next((l) => l.event === "listening");
      const proxyAddress = String(listening.address);
      assert.match(proxyAddress, /^127\.0\.0\.1:[1-9]\d*$/);

      // The tenant, with the real admin CLI; its image is the built one.
      const tpl = join(dir, "tenant.template.toml");
      await Deno.writeTextFile(tpl, template(1, v1));
      const created = await admin(sim, [
        "tenant",
        "create",
        "demo",
        "--template",
        tpl,
        "--access-token",
        ACCESS,
        "--json",
      ]);
      assert.equal(created.code, 0, created.stderr);
      const [machine] = tenantState(api, "demo").machines;
      assert.equal(machine.state, "started");
      assert.equal(machine.config.image, v1);
      // init runs from the image: its executable is the image's Deno, not this checkout's.
      const first = launches.at(-1)!;
      assert.equal(first.image, v1);
      assert.equal(await Deno.readLink(`/proc/${first.machine.pid}/exe`), "/usr/local/bin/deno");

      // A small rootfs to provision (and a second release of it to reprovision).
      const work = join(dir, "rootfs");
      const r1 = join(work, "v1");
      await Deno.mkdir(r1, { recursive: true });
      await sh("cp", ["-a", `${await hostRootfsTemplate()}/.`, r1]);
      await Deno.writeTextFile(join(r1, "etc", "image-version"), "1\n");
      await tarball(r1, join(work, "v1.tar.gz"));

      const configDir = join(dir, "client");
      await Deno.mkdir(configDir, { recursive: true });
      const writeConfig = async (rootfs: string) => {
        const path = join(configDir, "config.toml");
        await Deno.writeTextFile(
          path,
          `[vault.demo]
address = "${proxyAddress}"
machine_id = "${machine.id}"
org = "${ORG}"
app = "${APP}"
access_token = "${ACCESS}"
oidc_issuer = "${issuer.baseUrl}"
local_simulation = true
rootfs = "${rootfs}"
`,
          { mode: 0o600 },
        );
        await Deno.chmod(path, 0o600);
      };
      await writeConfig(join(work, "v1.tar.gz"));
      const client = (args: string[]) =>
        new Deno.Command(Deno.execPath(), {
          args: ["run", "-A", "--quiet", join(ROOT, "bin", "fly-vault.ts"), ...args],
          env: { FLY_VAULT_CONFIG_DIR: configDir, NO_COLOR: "1" },
          stdin: "null",
          stdout: "piped",
          stderr: "piped",
        });
      const run = async (args: string[]) => {
        const out = await client(args).output();
        const dec = new TextDecoder();
        return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
      };
      const exec = (script: string) =>
        run(["exec", "--argv", "-n", "demo", "--", "sh", "-c", script]);

      // First connect provisions, through the proxy.
      const provisioned = await run(["--json", "connect", "demo"]);
      assert.equal(provisioned.code, 0, provisioned.stderr);
      assert.ok(
        provisioned.stdout.split("\n").some((l) => l.includes('"event":"done"')),
        provisioned.stdout,
      );
      const status = await run(["--json", "status", "demo"]);
      assert.equal(status.code, 0, status.stderr);
      assert.equal(JSON.parse(status.stdout).machine_id, machine.id, "attested through the proxy");
      assert.equal((await exec("cat /etc/image-version")).stdout, "1\n");
      const keep = await exec("echo kept > /root/notes; mkdir -p /home/dev; echo hi > /home/dev/x");
      assert.equal(keep.code, 0, keep.stderr);
      // The volume flysim attached is where init keeps the tenant's rootfs.
      const volume = [...api.state.volumes.values()].find((v) =>
        v.attached_machine_id === machine.id
      )!;
      assert.equal(
        await Deno.readTextFile(join(volume.dir, "rootfs", "etc", "image-version")),
        "1\n",
      );

      // A console, as a person types it.
      const cli = `${Deno.execPath()} run -A --quiet ${join(ROOT, "bin", "fly-vault.ts")}`;
      await term.waitFor(/outer\$ $/);
      term.type(`${cli} connect demo\r`);
      await term.waitFor(PROMPT, 60_000);
      term.type("echo console-$((6*7))\r");
      await term.waitFor(/console-42/);
      await term.waitFor(PROMPT);
      term.type("\r~.");
      await term.waitFor(/outer\$ $/);

      // A TCP forward through the proxy and the machine.
      const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const localPort = (probe.addr as Deno.NetAddr).port;
      probe.close();
      const echoPort = (echo.addr as Deno.NetAddr).port;
      forward = client(["-v", "forward", "demo", `127.0.0.1:${localPort}:127.0.0.1:${echoPort}`])
        .spawn();
      await lineMatching(forward.stderr, /Ctrl-C stops/);
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: localPort });
      const payload = crypto.getRandomValues(new Uint8Array(65536));
      const w = conn.writable.getWriter();
      const sent = w.write(payload).then(() => conn.closeWrite());
      const got: number[] = [];
      for await (const chunk of conn.readable) got.push(...chunk);
      await sent;
      assert.deepEqual(new Uint8Array(got), payload, "bytes came back through the forward");
      forward.kill("SIGINT");
      await forward.status;
      forward = undefined;

      // Reprovision with a new release: /root and /home persist, the rest is the new image.
      const r2 = join(work, "v2");
      await sh("cp", ["-a", r1, r2]);
      await Deno.writeTextFile(join(r2, "etc", "image-version"), "2\n");
      await Deno.writeTextFile(join(r2, "root", "notes"), "from the image\n");
      await tarball(r2, join(work, "v2.tar.gz"));
      await writeConfig(join(work, "v2.tar.gz"));
      const again = await run(["connect", "demo", "--reprovision"]);
      assert.equal(again.code, 0, again.stderr);
      assert.equal(
        (await exec("cat /etc/image-version /root/notes /home/dev/x")).stdout,
        "2\nkept\nhi\n",
      );

      // update-image: the machine restarts on the second image; the client re-attests by itself.
      const instance = machine.instance_id;
      const up = await admin(sim, [
        "tenant",
        "update-image",
        "--image",
        v2,
        "--tenant",
        "demo",
        "--json",
      ]);
      assert.equal(up.code, 0, up.stderr);
      assert.equal(JSON.parse(up.stdout).updated.length, 1);
      assert.equal(machine.config.image, v2);
      assert.notEqual(machine.instance_id, instance);
      assert.equal(machine.state, "started");
      const second = launches.at(-1)!;
      assert.equal(second.image, v2);
      assert.notEqual(second.machine.pid, first.machine.pid);
      await first.machine.exited; // the first boot ended before the second began
      const after = await exec("cat /etc/image-version /root/notes /home/dev/x");
      assert.equal(after.code, 0, after.stderr);
      assert.equal(after.stdout, "2\nkept\nhi\n", "the volume's /root and /home survived");

      // Usage facts list the machine, on its new instance.
      const facts = await admin(sim, ["tenant", "usage-facts", "--tenant", "demo"]);
      assert.equal(facts.code, 0, facts.stderr);
      const listed = JSON.parse(facts.stdout);
      assert.equal(listed.length, 1);
      assert.equal(listed[0].machine_id, machine.id);
      assert.equal(listed[0].instance_id, machine.instance_id);
      assert.equal(listed[0].state, "started");

      // Delete: no machine and no volume left, the machine's process gone.
      const del = await admin(sim, ["tenant", "delete", "demo", "--yes"]);
      assert.equal(del.code, 0, del.stderr);
      const left = tenantState(api, "demo");
      assert.deepEqual([left.machines.length, left.volumes.length], [0, 0]);
      assert.equal(machine.state, "destroyed");
      await second.machine.exited;
      assert.equal(await Deno.stat(volume.dir).then(() => true, () => false), false);
    } finally {
      forward?.kill("SIGINT");
      await forward?.status;
      term.pty.kill("SIGKILL");
      echo.close();
      await serving.catch(() => {});
      try {
        proxy.kill("SIGTERM");
      } catch { /* gone */ }
      await proxy.status;
      await api.close();
      await issuer.close();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
