/**
 * The Debian minbase rootfs fixture for the provisioning tests and bench:
 * `debootstrap --variant=minbase bookworm` from the machine's configured
 * Debian mirror, plus one file with `security.capability` and one with a
 * `user.` xattr (minbase has none, and fidelity must cover them), packed by
 * GNU tar. Cached outside the repo (`/var/cache/fly-vault-test/minbase.tar.gz`,
 * or `$FLY_VAULT_TEST_CACHE`); building it the first time takes a minute or
 * a few, depending on the mirror.
 *
 * @module
 */
import { sh } from "../src/rootfs/testutil.ts";

/** Where the fixture cache lives. */
export const CACHE_DIR = Deno.env.get("FLY_VAULT_TEST_CACHE") ?? "/var/cache/fly-vault-test";

async function mirror(): Promise<string> {
  for (const f of ["/etc/apt/sources.list.d/debian.sources", "/etc/apt/sources.list"]) {
    const text = await Deno.readTextFile(f).catch(() => "");
    const m = text.match(/^URIs:\s*(\S+)/m) ?? text.match(/^deb\s+(?:\[[^\]]*\]\s+)?(\S+)/m);
    if (m && !m[1].includes("security")) return m[1];
  }
  return "http://deb.debian.org/debian";
}

/** Path of the minbase tar.gz, built once when absent. */
export async function ensureMinbase(): Promise<string> {
  const out = `${CACHE_DIR}/minbase.tar.gz`;
  if (await Deno.lstat(out).then(() => true, () => false)) return out;
  await Deno.mkdir(CACHE_DIR, { recursive: true });
  // One builder at a time, even across processes.
  const lock = await Deno.open(`${CACHE_DIR}/.lock`, { create: true, write: true });
  await lock.lock(true);
  try {
    if (await Deno.lstat(out).then(() => true, () => false)) return out;
    const dir = `${CACHE_DIR}/minbase.build-${Deno.pid}`;
    console.error(`building the Debian minbase fixture in ${dir} (first time only)…`);
    await sh("debootstrap", ["--variant=minbase", "bookworm", dir, await mirror()]);
    await Deno.copyFile(`${dir}/usr/bin/true`, `${dir}/usr/local/bin/fly-vault-captest`);
    await sh("setfattr", [
      "-n",
      "security.capability",
      "-v",
      "0x0100000200200000000000000000000000000000", // cap_net_raw+ep
      `${dir}/usr/local/bin/fly-vault-captest`,
    ]);
    await sh("setfattr", ["-n", "user.fly-vault", "-v", "fixture", `${dir}/etc/hostname`]);
    await sh("tar", [
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
    await Deno.remove(dir, { recursive: true });
    return out;
  } finally {
    lock.close();
  }
}
