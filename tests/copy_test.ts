/**
 * `cp` end to end over loopback streams against the init-side handler with
 * a rootfs directory: a tree with a symlink, an executable and a 50 MiB file
 * goes up and comes back identical; errors are clear; an interrupted copy
 * leaves nothing under the final name; a full disk says so.
 */
import assert from "node:assert/strict";
import { isVaultError } from "../src/errors/mod.ts";
import { planCopy, runCopy, serveCopy } from "../src/copy/mod.ts";
import { StreamTag } from "../src/protocol/mod.ts";
import { startLoopbackServer } from "./console_loopback.ts";
import { hostRootfsTemplate } from "./harness.ts";
import { stopNamespace } from "../src/init/namespace.ts";

interface Entry {
  kind: "file" | "dir" | "link";
  mode: number;
  mtime: number;
  size: number;
  link?: string;
}

async function snapshot(root: string): Promise<Map<string, Entry>> {
  const out = new Map<string, Entry>();
  const walk = async (rel: string) => {
    const path = rel ? `${root}/${rel}` : root;
    const info = await Deno.lstat(path);
    const kind = info.isSymlink ? "link" : info.isDirectory ? "dir" : "file";
    out.set(rel || ".", {
      kind,
      mode: kind === "link" ? 0 : info.mode! & 0o7777,
      mtime: kind === "link" ? 0 : Math.floor(info.mtime!.getTime() / 1000),
      size: kind === "file" ? info.size : 0,
      link: kind === "link" ? await Deno.readLink(path) : undefined,
    });
    if (kind === "dir") {
      for await (const e of Deno.readDir(path)) await walk(rel ? `${rel}/${e.name}` : e.name);
    }
  };
  await walk("");
  return out;
}

async function sameBytes(a: string, b: string): Promise<boolean> {
  return Buffer.from(await Deno.readFile(a)).equals(Buffer.from(await Deno.readFile(b)));
}

async function makeTree(dir: string): Promise<void> {
  await Deno.mkdir(`${dir}/sub/deeper`, { recursive: true });
  await Deno.writeTextFile(`${dir}/notes.txt`, "hello\n");
  await Deno.writeTextFile(`${dir}/run.sh`, "#!/bin/sh\necho hi\n");
  await Deno.chmod(`${dir}/run.sh`, 0o755);
  await Deno.writeTextFile(`${dir}/sub/deeper/secret`, "s");
  await Deno.chmod(`${dir}/sub/deeper/secret`, 0o600);
  await Deno.symlink("../notes.txt", `${dir}/sub/link-to-notes`);
  await Deno.symlink("/nonexistent/elsewhere", `${dir}/dangling`);
  const big = new Uint8Array(50 * 1024 * 1024);
  for (let off = 0; off < big.length; off += 65536) {
    crypto.getRandomValues(big.subarray(off, off + 65536));
  }
  await Deno.writeFile(`${dir}/sub/big.bin`, big);
  const old = new Date("2020-02-02T02:02:02Z");
  await Deno.utime(`${dir}/notes.txt`, old, old);
  await Deno.utime(`${dir}/sub`, old, old);
  await Deno.chmod(`${dir}/sub`, 0o750);
}

/** A rootfs with the machine's tools (tar: cp runs the vault's own), laid fresh per test. */
async function setup() {
  const rootfs = `${await Deno.makeTempDir({ prefix: "fv-cp-rootfs-" })}/rootfs`;
  const laid = await new Deno.Command("cp", { args: ["-a", await hostRootfsTemplate(), rootfs] })
    .output();
  assert.ok(laid.success, "cp -a of the template rootfs");
  await Deno.mkdir(`${rootfs}/root`, { recursive: true });
  const local = await Deno.makeTempDir({ prefix: "fv-cp-local-" });
  const server = startLoopbackServer((tag, reader, writer) =>
    tag === StreamTag.copy ? serveCopy(reader, writer, { rootfsDir: rootfs }) : Promise.resolve()
  );
  return {
    rootfs,
    local,
    server,
    async cleanup() {
      await server.close();
      await stopNamespace(rootfs);
      await Deno.remove(`${rootfs}/..`, { recursive: true }).catch(() => {});
      await Deno.remove(local, { recursive: true }).catch(() => {});
    },
  };
}

async function leftovers(dir: string): Promise<string[]> {
  const names: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    if (e.name.startsWith(".fly-vault-cp")) names.push(e.name);
  }
  return names;
}

Deno.test({
  name:
    "cp: a tree with a symlink, an executable and a 50 MiB file goes up and comes back identical",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const env = await setup();
    try {
      const src = `${env.local}/project`;
      await makeTree(src);
      const up = await runCopy(env.server.openStream, planCopy([src, "vault:/root/project"]), {
        recursive: true,
        progress: false,
      });
      assert.equal(up.entries, 1);
      const remote = `${env.rootfs}/root/project`;
      const original = await snapshot(src);
      assert.deepEqual(await snapshot(remote), original);
      assert.ok(await sameBytes(`${src}/sub/big.bin`, `${remote}/sub/big.bin`));
      assert.equal(await Deno.readLink(`${remote}/sub/link-to-notes`), "../notes.txt");

      // Into an existing directory: it lands as dir/project.
      await Deno.mkdir(`${env.local}/back`);
      const down = await runCopy(
        env.server.openStream,
        planCopy(["vault:/root/project", `${env.local}/back`]),
        { recursive: true, progress: false },
      );
      assert.equal(down.entries, 1);
      assert.deepEqual(await snapshot(`${env.local}/back/project`), original);
      assert.ok(await sameBytes(`${src}/sub/big.bin`, `${env.local}/back/project/sub/big.bin`));

      // Single files: renamed on the way, several into a directory.
      await runCopy(env.server.openStream, planCopy([`${src}/run.sh`, "vault:/root/renamed.sh"]));
      assert.equal((await Deno.stat(`${env.rootfs}/root/renamed.sh`)).mode! & 0o777, 0o755);
      await runCopy(
        env.server.openStream,
        planCopy([`${src}/notes.txt`, `${src}/run.sh`, "vault:/root/"]),
      );
      assert.equal(await Deno.readTextFile(`${env.rootfs}/root/notes.txt`), "hello\n");
      assert.deepEqual(await leftovers(`${env.rootfs}/root`), []);
      assert.deepEqual(await leftovers(`${env.local}/back`), []);
    } finally {
      await env.cleanup();
    }
  },
});

Deno.test({
  name: "cp: missing sources, directories without -r and missing destinations are clear errors",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const env = await setup();
    try {
      const expect = async (p: Promise<unknown>, code: string, re: RegExp) => {
        await assert.rejects(p, (err: unknown) => {
          assert.ok(isVaultError(err, code), `expected ${code}, got ${err}`);
          assert.match(err.message, re);
          return true;
        });
      };
      const open = env.server.openStream;
      await expect(
        runCopy(open, planCopy([`${env.local}/nope`, "vault:/root/"])),
        "copy.no_source",
        /nope: no such file/,
      );
      await expect(
        runCopy(open, planCopy(["vault:/root/nope", env.local])),
        "copy.no_source",
        /\/root\/nope: no such file or directory in the vault/,
      );
      await expect(
        runCopy(open, planCopy([env.local, "vault:/root/"])),
        "copy.is_directory",
        /is a directory/,
      );
      await Deno.writeTextFile(`${env.local}/f`, "x");
      await expect(
        runCopy(open, planCopy([`${env.local}/f`, "vault:/no/such/dir/f"])),
        "copy.no_dest",
        /does not exist/,
      );
      assert.throws(() => planCopy(["a", "b"]), /no side is remote/);
      assert.throws(() => planCopy(["vault:/a", "vault:/b"]), /both sides are remote/);
    } finally {
      await env.cleanup();
    }
  },
});

Deno.test({
  name: "cp: an interrupted copy leaves no partial file under the final name (both directions)",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const env = await setup();
    try {
      const big = new Uint8Array(40 * 1024 * 1024);
      await Deno.writeFile(`${env.local}/big.bin`, big);
      let dropped = false;
      await assert.rejects(
        runCopy(env.server.openStream, planCopy([`${env.local}/big.bin`, "vault:/root/big.bin"]), {
          onProgress: (bytes) => {
            if (bytes > 8 * 1024 * 1024 && !dropped) {
              dropped = true;
              env.server.dropAll();
            }
          },
        }),
        (err: unknown) => isVaultError(err, "copy.") || err instanceof Error,
      );
      assert.ok(dropped);
      await env.server.close(); // waits for the handler to clean up
      await assert.rejects(Deno.lstat(`${env.rootfs}/root/big.bin`), Deno.errors.NotFound);
      assert.deepEqual(await leftovers(`${env.rootfs}/root`), []);

      // Download, cut mid-way.
      const env2 = startLoopbackServer((tag, reader, writer) =>
        tag === StreamTag.copy
          ? serveCopy(reader, writer, { rootfsDir: env.rootfs })
          : Promise.resolve()
      );
      await Deno.writeFile(`${env.rootfs}/root/down.bin`, big);
      let cut = false;
      await assert.rejects(
        runCopy(env2.openStream, planCopy(["vault:/root/down.bin", `${env.local}/down.bin`]), {
          onProgress: (bytes) => {
            if (bytes > 8 * 1024 * 1024 && !cut) {
              cut = true;
              env2.dropAll();
            }
          },
        }),
        (err: unknown) => isVaultError(err, "copy.lost"),
      );
      await env2.close();
      await assert.rejects(Deno.lstat(`${env.local}/down.bin`), Deno.errors.NotFound);
      assert.deepEqual(await leftovers(env.local), []);
    } finally {
      await env.cleanup();
    }
  },
});

Deno.test({
  name: "cp: a full disk is reported as such and nothing is left behind",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const env = await setup();
    const small = `${env.rootfs}/root/small`;
    await Deno.mkdir(small);
    const mount = await new Deno.Command("mount", {
      args: ["-t", "tmpfs", "-o", "size=1m", "tmpfs", small],
      stderr: "piped",
    }).output();
    assert.ok(mount.success, new TextDecoder().decode(mount.stderr));
    try {
      await Deno.writeFile(`${env.local}/five.bin`, new Uint8Array(5 * 1024 * 1024));
      await assert.rejects(
        runCopy(env.server.openStream, planCopy([`${env.local}/five.bin`, "vault:/root/small/"])),
        (err: unknown) => {
          assert.ok(isVaultError(err, "copy.no_space"), String(err));
          assert.match(err.message, /disk full/);
          return true;
        },
      );
      await assert.rejects(Deno.lstat(`${small}/five.bin`), Deno.errors.NotFound);
      assert.deepEqual(await leftovers(small), []);
    } finally {
      await new Deno.Command("umount", { args: [small] }).output();
      await env.cleanup();
    }
  },
});

Deno.test({
  name:
    "cp: paths are the vault's — a link out of the rootfs stays inside, messages never name a host path, no tar is copy.no_tar",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const env = await setup();
    const hostDir = await Deno.makeTempDir({ prefix: "fv-cp-host-" });
    try {
      const open = env.server.openStream;
      await Deno.writeTextFile(`${env.local}/f`, "upload\n");
      await Deno.writeTextFile(`${hostDir}/secret`, "HOST\n");
      // Absolute links name the rootfs's paths, as the tenant sees them.
      await Deno.symlink(hostDir, `${env.rootfs}/root/out`);
      await assert.rejects(
        runCopy(open, planCopy([`${env.local}/f`, "vault:/root/out/"])),
        (err) => {
          assert.ok(isVaultError(err, "copy.no_dest"), String(err));
          assert.equal(err.message, "destination directory /root/out/ does not exist");
          return true;
        },
      );
      await assert.rejects(
        runCopy(open, planCopy(["vault:/root/out/secret", `${env.local}/got`])),
        (err) => {
          assert.ok(isVaultError(err, "copy.no_source"), String(err));
          assert.equal(err.message, "/root/out/secret: no such file or directory in the vault");
          return true;
        },
      );
      await Deno.mkdir(env.rootfs + hostDir, { recursive: true });
      await Deno.writeTextFile(`${env.rootfs}${hostDir}/secret`, "rootfs\n");
      await runCopy(open, planCopy([`${env.local}/f`, "vault:/root/out/"]));
      await runCopy(open, planCopy(["vault:/root/out/secret", `${env.local}/got`]));
      assert.equal(await Deno.readTextFile(`${env.local}/got`), "rootfs\n");
      assert.equal(await Deno.readTextFile(`${env.rootfs}${hostDir}/f`), "upload\n");
      const onHost: string[] = [];
      for await (const e of Deno.readDir(hostDir)) onHost.push(e.name);
      assert.deepEqual(onHost, ["secret"]);

      // A rootfs without tar: a clear error both ways (as scp needs the remote's scp).
      for (const dir of ["usr/bin", "bin"]) {
        await Deno.remove(`${env.rootfs}/${dir}/tar`).catch(() => {});
      }
      for (
        const plan of [[`${env.local}/f`, "vault:/root/"], ["vault:/root/out/secret", env.local]]
      ) {
        await assert.rejects(runCopy(open, planCopy(plan)), (err) => {
          assert.ok(isVaultError(err, "copy.no_tar"), String(err));
          assert.match(err.hint, /install tar in the vault's image/);
          return true;
        });
      }
      assert.deepEqual(await leftovers(`${env.rootfs}/root`), []);
    } finally {
      await Deno.remove(hostDir, { recursive: true }).catch(() => {});
      await env.cleanup();
    }
  },
});

/** The child of the userns test: a loopback init side and a client, as an unprivileged user. */
const USERNS_CHILD = `
import { planCopy, runCopy, serveCopy } from "./src/copy/mod.ts";
import { StreamTag } from "./src/protocol/mod.ts";
import { detectSandbox } from "./src/init/sandbox.ts";
import { startLoopbackServer } from "./tests/console_loopback.ts";
const rootfs = Deno.env.get("CP_ROOTFS"), local = Deno.env.get("CP_LOCAL");
console.log("sandbox " + await detectSandbox());
const server = startLoopbackServer((tag, r, w) =>
  tag === StreamTag.copy ? serveCopy(r, w, { rootfsDir: rootfs }) : Promise.resolve()
);
const opts = { recursive: true, progress: false };
await runCopy(server.openStream, planCopy([local + "/project", "vault:/root/project"]), opts);
await runCopy(server.openStream, planCopy(["vault:/root/project", local + "/back"]), opts);
try {
  await runCopy(server.openStream, planCopy(["vault:/root/nope", local + "/x"]), opts);
} catch (err) {
  console.log(err.code + ": " + err.message);
}
await server.close();
`;

Deno.test({
  name: "cp: the laptop's userns fallback (init not root) copies both ways inside the rootfs",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const env = await setup();
    const denoDir = await Deno.makeTempDir({ prefix: "fv-cp-denodir-" });
    try {
      await makeTree(`${env.local}/project`);
      // The unprivileged user owns the vault's /root and the local side, as on a laptop.
      const nobody = "65534";
      for (const path of [`${env.rootfs}/root`, env.local, denoDir]) {
        const out = await new Deno.Command("chown", { args: ["-R", `${nobody}:${nobody}`, path] })
          .output();
        assert.ok(out.success, `chown ${path}`);
      }
      for (const dir of [`${env.rootfs}/..`, env.rootfs]) await Deno.chmod(dir, 0o755);
      await Deno.chmod(env.local, 0o755);
      const child = await new Deno.Command("setpriv", {
        args: [
          `--reuid=${nobody}`,
          `--regid=${nobody}`,
          "--clear-groups",
          Deno.execPath(),
          "eval",
          "--quiet",
          USERNS_CHILD,
        ],
        cwd: new URL("..", import.meta.url).pathname,
        env: {
          PATH: "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
          DENO_DIR: denoDir,
          HOME: denoDir,
          CP_ROOTFS: env.rootfs,
          CP_LOCAL: env.local,
        },
        clearEnv: true,
        stdout: "piped",
        stderr: "piped",
      }).output();
      const stdout = new TextDecoder().decode(child.stdout);
      assert.ok(child.success, `${stdout}${new TextDecoder().decode(child.stderr)}`);
      assert.equal(
        stdout,
        "sandbox userns\ncopy.no_source: /root/nope: no such file or directory in the vault\n",
      );
      const original = await snapshot(`${env.local}/project`);
      assert.deepEqual(await snapshot(`${env.rootfs}/root/project`), original);
      assert.deepEqual(await snapshot(`${env.local}/back`), original);
      assert.deepEqual(await leftovers(`${env.rootfs}/root`), []);
    } finally {
      await Deno.remove(denoDir, { recursive: true }).catch(() => {});
      await env.cleanup();
    }
  },
});
