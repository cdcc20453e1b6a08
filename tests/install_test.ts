/**
 * Installing the five programs on PATH, as the README says (`npm install -g .`
 * after `npm ci`): each runs from any directory, its launcher finding the
 * pinned Deno and the sources from its own location, not the working
 * directory. And `engines.node` is true: every dependency in the lockfile
 * supports the oldest Node we claim, so `npm ci` on it warns of nothing.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { ROOT } from "./harness.ts";

const pkg = JSON.parse(await Deno.readTextFile(join(ROOT, "package.json")));

type Version = [number, number, number];

function parseVersion(s: string): Version {
  const [a = 0, b = 0, c = 0] = s.trim().split(".").map((n) => Number(n));
  return [a, b, c];
}

function cmp(x: Version, y: Version): number {
  for (let i = 0; i < 3; i++) if (x[i] !== y[i]) return x[i] - y[i];
  return 0;
}

/** Whether `v` satisfies an npm range of the forms the lockfile uses (>=, ^, ||). */
function satisfies(v: Version, range: string): boolean {
  return range.split("||").some((alt) => {
    const a = alt.trim();
    let m = /^>=\s*(\d+(?:\.\d+){0,2})$/.exec(a);
    if (m) return cmp(v, parseVersion(m[1])) >= 0;
    m = /^\^\s*(\d+(?:\.\d+){0,2})$/.exec(a);
    if (m) {
      const want = parseVersion(m[1]);
      return v[0] === want[0] && cmp(v, want) >= 0;
    }
    throw new Error(`engines range form not understood by this test: ${JSON.stringify(range)}`);
  });
}

Deno.test("install: every dependency supports the Node version package.json's engines states; npm ci warns of nothing", async () => {
  const claimed = /^>=\s*(\d+(?:\.\d+){0,2})$/.exec(pkg.engines?.node ?? "");
  assert.ok(claimed, `package.json engines.node is a plain >= bound: ${pkg.engines?.node}`);
  const oldest = parseVersion(claimed[1]);
  const lock = JSON.parse(await Deno.readTextFile(join(ROOT, "package-lock.json")));
  const unsupported: string[] = [];
  type LockEntry = { version?: string; engines?: { node?: unknown } };
  for (const [path, entry] of Object.entries(lock.packages as Record<string, LockEntry>)) {
    const range = entry?.engines?.node;
    if (path === "" || typeof range !== "string") continue;
    if (!satisfies(oldest, range)) unsupported.push(`${path}@${entry.version} needs ${range}`);
  }
  assert.deepEqual(unsupported, [], `engines.node ${pkg.engines.node} is not true`);
  // The CI machine and a newcomer's machine: the Node running npm here is one we support.
  const node = await new Deno.Command("node", { args: ["--version"], stdout: "piped" }).output();
  const running = parseVersion(new TextDecoder().decode(node.stdout).replace(/^v/, ""));
  assert.ok(cmp(running, oldest) >= 0, "this machine's Node is older than engines.node");

  // What a newcomer runs first: `npm ci` (a dry run on a copy of the manifests) warns of nothing.
  const tmp = await Deno.makeTempDir({ prefix: "fv-npm-ci-" });
  try {
    for (const f of ["package.json", "package-lock.json"]) {
      await Deno.copyFile(join(ROOT, f), join(tmp, f));
    }
    const ci = await new Deno.Command("npm", {
      args: ["ci", "--dry-run", "--prefer-offline", "--ignore-scripts", "--no-audit", "--no-fund"],
      cwd: tmp,
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(60_000),
    }).output();
    const said = new TextDecoder().decode(ci.stdout) + new TextDecoder().decode(ci.stderr);
    assert.equal(ci.code, 0, said);
    assert.doesNotMatch(said, /EBADENGINE/, said);
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test({
  name: "install: npm install -g puts the five programs on PATH; each runs from another directory",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const tmp = await Deno.makeTempDir({ prefix: "fv-install-" });
    try {
      const prefix = join(tmp, "prefix");
      const elsewhere = join(tmp, "elsewhere");
      await Deno.mkdir(elsewhere);
      // A local folder installs as a link to it: dependencies from its node_modules, no registry.
      const install = await new Deno.Command("npm", {
        args: [
          "install",
          "-g",
          "--prefix",
          prefix,
          "--prefer-offline",
          "--no-audit",
          "--no-fund",
          ROOT,
        ],
        cwd: elsewhere,
        stdout: "piped",
        stderr: "piped",
        signal: AbortSignal.timeout(120_000),
      }).output();
      const said = new TextDecoder().decode(install.stdout) +
        new TextDecoder().decode(install.stderr);
      assert.equal(install.code, 0, said);
      assert.doesNotMatch(said, /EBADENGINE/, said);

      const programs = Object.keys(pkg.bin);
      assert.deepEqual(programs.toSorted(), [
        "fly-vault",
        "fly-vault-admin",
        "fly-vault-init",
        "flysim",
        "vault-proxy",
      ]);
      const nodeDir = (await Deno.realPath(
        new TextDecoder().decode(
          (await new Deno.Command("sh", { args: ["-c", "command -v node"], stdout: "piped" })
            .output()).stdout,
        ).trim(),
      )).replace(/\/node$/, "");
      // Only the prefix's bin and node: no node_modules/.bin, no deno, not the repo as cwd.
      const env = {
        PATH: `${join(prefix, "bin")}:${nodeDir}:/usr/bin:/bin`,
        HOME: tmp,
        NO_COLOR: "1",
      };
      await Promise.all(programs.map(async (program) => {
        // Found through PATH by a shell, as a user's terminal would.
        const out = await new Deno.Command("/bin/sh", {
          args: ["-c", `${program} --help`],
          cwd: elsewhere,
          env,
          clearEnv: true,
          stdout: "piped",
          stderr: "piped",
          signal: AbortSignal.timeout(60_000),
        }).output();
        const text = new TextDecoder().decode(out.stdout);
        assert.equal(out.code, 0, `${program} --help: ${new TextDecoder().decode(out.stderr)}`);
        assert.match(text, new RegExp(`^Usage: ${program} `), program);
      }));
    } finally {
      await Deno.remove(tmp, { recursive: true }).catch(() => {});
    }
  },
});
