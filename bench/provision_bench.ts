/**
 * Issue 3 benchmark (provisioning), on the Debian minbase tarball
 * (tests/provision_fixture.ts builds and caches it):
 *
 * - extraction alone: fly-vault's verified streaming extractor against
 *   `tar -xzf` (GNU tar, same flags), interleaved, onto the same disk.
 *   Target ≤ 1.1×.
 * - a full provision (extract, verify, seed persist, sync, swap).
 * - init's peak RSS while provisioning, for the minbase tarball and one
 *   twice its size: it must stay flat (streaming, nothing held whole).
 * - end to end: `fly-vault connect demo --reprovision` against a flysim
 *   machine running the real init (hash, attest/pin, upload over QUIC,
 *   verified extraction, sync, swap) against `ssh host 'tar -xzf - -C dir'
 *   < rootfs.tar.gz` over OpenSSH on loopback. Target ≤ 1.0×. fly-vault
 *   also pays for durability (syncfs before the swap) that ssh+tar does not.
 *
 *   npx deno run -A bench/provision_bench.ts [rounds]
 */
import { join } from "node:path";
import { startSim, vaultFor } from "../tests/harness.ts";
import { ensureMinbase } from "../tests/provision_fixture.ts";
import { startSshd } from "../tests/sshd.ts";
import { median, quantile } from "./lib/stats.ts";

const rounds = Number(Deno.args[0] ?? 5);
const here = new URL(".", import.meta.url).pathname;
const child = join(here, "provision_child.ts");
const tarball = await ensureMinbase();
const work = await Deno.makeTempDir({ dir: "/var/tmp", prefix: "fv-provision-bench-" });

async function run(cmd: string, args: string[], opts: { stdin?: string } = {}) {
  const c = new Deno.Command(cmd, {
    args,
    stdin: opts.stdin ? "piped" : "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (opts.stdin) {
    const f = await Deno.open(opts.stdin);
    await f.readable.pipeTo(c.stdin);
  }
  const out = await c.output();
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  }
  return new TextDecoder().decode(out.stdout);
}

/** Runs `fn` on a fresh target directory; the clean-up and writeback are not timed. */
async function timed(fn: (target: string) => Promise<unknown>, base = work): Promise<number> {
  const target = join(base, "target");
  await run("rm", ["-rf", target]);
  await run("sync", []);
  const started = performance.now();
  await fn(target);
  return performance.now() - started;
}

const fvChild = (mode: string, tar: string) => async (target: string) => {
  const out = JSON.parse(
    await run(Deno.execPath(), ["run", "-A", "--quiet", child, mode, tar, target]),
  );
  return out as { ms: number; vmhwm_kb: number };
};

/** A tarball twice the size of minbase (the tree, plus a copy of it in /opt/copy), cached. */
async function doubleTarball(): Promise<string> {
  const out = tarball.replace(/\.tar\.gz$/, "-double.tar.gz");
  if (await Deno.lstat(out).then(() => true, () => false)) return out;
  const dir = join(work, "double");
  const copy = join(dir, "opt", "copy");
  await Deno.mkdir(dir);
  const x = ["--numeric-owner", "-p", "--xattrs", "--xattrs-include=*"];
  await run("tar", ["-xzf", tarball, ...x, "-C", dir]);
  await Deno.mkdir(copy, { recursive: true });
  // The copy leaves out dev/: device nodes belong under /dev only.
  await run("tar", ["-xzf", tarball, ...x, "--exclude=./dev", "-C", copy]);
  await run("tar", [
    "--numeric-owner",
    "--xattrs",
    "--xattrs-include=*",
    "-czf",
    `${out}.tmp`,
    "-C",
    dir,
    ".",
  ]);
  await Deno.rename(`${out}.tmp`, out);
  await run("rm", ["-rf", dir]);
  return out;
}

try {
  // Extraction is compared twice: on tmpfs (the pipeline's own cost, no disk noise) and on
  // the disk (what a volume sees; this machine's disk is noisy: discard, shared I/O).
  const tmpfs = join(work, "tmpfs");
  await Deno.mkdir(tmpfs);
  await run("mount", ["-t", "tmpfs", "-o", "size=3g", "tmpfs", tmpfs]);
  const extract: Record<string, { gnu: number[]; ours: number[]; inside: number[] }> = {};
  const rss: number[] = [];
  try {
    for (const [where, base] of [["tmpfs", tmpfs], ["disk", work]] as const) {
      const e: { gnu: number[]; ours: number[]; inside: number[] } = {
        gnu: [],
        ours: [],
        inside: [],
      };
      extract[where] = e;
      for (let i = 0; i < rounds; i++) {
        e.gnu.push(
          await timed(async (t) => {
            await Deno.mkdir(t);
            await run("tar", [
              "-xzf",
              tarball,
              "--numeric-owner",
              "--same-owner",
              "-p",
              "--xattrs",
              "--xattrs-include=*",
              "-C",
              t,
            ]);
          }, base),
        );
        e.ours.push(
          await timed(async (t) => {
            const r = await fvChild("extract", tarball)(t);
            e.inside.push(r.ms);
            rss.push(r.vmhwm_kb);
          }, base),
        );
      }
      await run("rm", ["-rf", join(base, "target")]);
    }
  } finally {
    await run("umount", [tmpfs]);
  }
  const provision: number[] = [];
  const provisionRss: number[] = [];
  for (let i = 0; i < Math.max(2, Math.ceil(rounds / 2)); i++) {
    provision.push(
      await timed(async (t) => {
        const r = await fvChild("provision", tarball)(t);
        provisionRss.push(r.vmhwm_kb);
      }),
    );
  }
  const double = await doubleTarball();
  let doubleRss = 0;
  await timed(async (t) => {
    doubleRss = (await fvChild("provision", double)(t)).vmhwm_kb;
  });

  const sshd = await startSshd();
  const ssh: number[] = [];
  try {
    for (let i = 0; i < rounds; i++) {
      ssh.push(
        await timed(async (t) => {
          await run("ssh", [
            ...sshd.options,
            "root@127.0.0.1",
            `mkdir ${t} && tar -xzf - --numeric-owner -p --xattrs --xattrs-include='*' -C ${t}`,
          ], { stdin: tarball });
        }),
      );
    }
  } finally {
    await sshd.stop();
  }

  const e2e: number[] = [];
  const sim = await startSim();
  try {
    const m = await sim.startMachine("bench01");
    await sim.writeConfig({ demo: vaultFor(sim, m, { rootfs: tarball }) });
    const volume = join(sim.dir, "volumes", "bench01");
    const idle = async () => {
      // The previous rootfs is removed in the background after each provision; let it finish
      // so one round does not pay for the last (a bench may poll; tests never do).
      while ([...Deno.readDirSync(volume)].some((e) => e.name.startsWith("rootfs.old-"))) {
        await new Promise((r) => setTimeout(r, 50));
      }
      await run("sync", []);
    };
    for (let i = 0; i < rounds; i++) {
      await idle();
      const r = await sim.client(["connect", "demo", "--reprovision"]);
      if (r.code !== 0) throw new Error(`fly-vault connect --reprovision: ${r.stderr}`);
      e2e.push(r.ms);
    }
  } finally {
    await sim.close();
  }

  const stat = (xs: number[]) => ({
    p50: Math.round(median(xs)),
    p90: Math.round(quantile(xs, 0.9)),
  });
  const mib = (kb: number) => Math.round(kb / 1024);
  console.log(JSON.stringify(
    {
      bench: "provision",
      rounds,
      tarball_bytes: (await Deno.stat(tarball)).size,
      extract: Object.fromEntries(
        Object.entries(extract).map(([where, e]) => [where, {
          gnu_tar_ms: stat(e.gnu),
          fly_vault_ms: stat(e.ours),
          fly_vault_in_process_ms: stat(e.inside),
          ratio_p50: Number((median(e.ours) / median(e.gnu)).toFixed(3)),
          target: "ratio_p50 <= 1.1",
        }]),
      ),
      provision_ms: stat(provision),
      peak_rss_mib: {
        extract_minbase: mib(Math.max(...rss)),
        provision_minbase: mib(Math.max(...provisionRss)),
        provision_double: mib(doubleRss),
        target: "flat: not growing with tarball size",
      },
      end_to_end: {
        ssh_tar_ms: stat(ssh),
        fly_vault_ms: stat(e2e),
        ratio_p50: Number((median(e2e) / median(ssh)).toFixed(3)),
        target: "ratio_p50 <= 1.0",
      },
    },
    null,
    2,
  ));
} finally {
  await run("rm", ["-rf", work]);
}
