/**
 * Issue 12.6: one exit-status rule for the five programs. A usage mistake
 * (unknown option, missing argument, bad value, bad spec) exits 2 with
 * `error[code]: …` and `hint: …` on stderr, commander's own errors included;
 * `--version` prints package.json's version and exits 0.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { ROOT } from "./harness.ts";

const VERSION = JSON.parse(await Deno.readTextFile(join(ROOT, "package.json"))).version;

async function run(program: string, args: string[]) {
  const configDir = await Deno.makeTempDir({ prefix: "fv-cli-exit-" });
  try {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--quiet", join(ROOT, "bin", `${program}.ts`), ...args],
      // No API tokens from the environment: the admin must not reach anything.
      env: { FLY_VAULT_CONFIG_DIR: configDir, NO_COLOR: "1" },
      clearEnv: true,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(30_000),
    }).output();
    const dec = new TextDecoder();
    return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
  } finally {
    await Deno.remove(configDir, { recursive: true });
  }
}

const MISTAKES: Array<[string, string[], RegExp]> = [
  [
    "fly-vault",
    ["--bogus", "status", "demo"],
    /error\[usage\.unknown_option\]: unknown option '--bogus'\nhint: see 'fly-vault status --help'/,
  ],
  [
    "fly-vault",
    ["status"],
    /error\[usage\.missing_argument\]: .*'vault'\nhint: see 'fly-vault status --help'/,
  ],
  [
    "fly-vault",
    ["connect", "demo", "--frob"],
    /error\[usage\.unknown_option\].*\nhint: see 'fly-vault connect --help'/,
  ],
  [
    "fly-vault",
    ["--connect-timeout", "soon", "status", "demo"],
    /error\[usage\.bad_value\]: --connect-timeout soon/,
  ],
  [
    "fly-vault",
    ["exec", "--frob", "demo", "true"],
    /error\[usage\.unknown_option\].*\nhint: see 'fly-vault exec --help'/,
  ],
  ["fly-vault", ["exec", "demo"], /error\[usage\.missing_argument\].*'command'/],
  ["fly-vault", ["nonsense"], /error\[usage\.unknown_command\]/],
  ["fly-vault", ["forward", "demo", "bogus"], /error\[forward\.bad_spec\]/],
  ["fly-vault", ["forward", "demo"], /error\[usage\./],
  ["fly-vault", ["pipe", "demo", "no-port"], /error\[forward\.bad_target\]/],
  ["fly-vault", ["pipe", "demo"], /error\[usage\.missing_argument\]/],
  ["fly-vault", ["cp", "only-one"], /error\[copy\.usage\]/],
  [
    "fly-vault",
    ["cp", "-x", "a", "b"],
    /error\[usage\.unknown_option\].*\nhint: see 'fly-vault cp --help'/,
  ],
  ["fly-vault-admin", ["--bogus"], /error\[usage\.unknown_option\]/],
  [
    "fly-vault-admin",
    ["tenant", "create", "acme"],
    /error\[usage\.missing_option\].*--template.*\nhint: see 'fly-vault-admin tenant create --help'/,
  ],
  [
    "fly-vault-admin",
    ["--deadline", "x", "tenant", "list"],
    /error\[usage\.bad_value\]: --deadline x/,
  ],
  ["vault-proxy", ["--bogus"], /error\[usage\.unknown_option\].*\nhint: see 'vault-proxy --help'/],
  ["vault-proxy", ["--listen", "127.0.0.1:0"], /error\[proxy\.usage\]/],
  ["flysim", ["--bogus"], /error\[usage\.unknown_option\].*\nhint: .*see 'flysim --help'/],
  ["flysim", ["--lo"], /hint: did you mean --logs\? see 'flysim --help'/],
  ["flysim", ["--port"], /error\[usage\.missing_value\]/],
  [
    "fly-vault-init",
    ["--bogus"],
    /error\[usage\.unknown_option\].*\nhint: see 'fly-vault-init --help'/,
  ],
];

Deno.test("every program: a usage mistake exits 2 with error[…] and a hint", async () => {
  // Four at a time: enough to be quick, frugal on a shared machine.
  for (let i = 0; i < MISTAKES.length; i += 4) {
    await Promise.all(
      MISTAKES.slice(i, i + 4).map(async ([program, args, expected]) => {
        const what = `${program} ${args.join(" ")}`;
        const r = await run(program, args);
        assert.equal(r.code, 2, `${what}: exit ${r.code}\n${r.stderr}`);
        assert.match(r.stderr, /^error\[[a-z_.]+\]: .+\nhint: .+\n$/, `${what}: ${r.stderr}`);
        assert.match(r.stderr, expected, what);
      }),
    );
  }
});

Deno.test("every program: --version prints the package version and exits 0", async () => {
  const programs = ["fly-vault", "fly-vault-admin", "vault-proxy", "flysim", "fly-vault-init"];
  const results = await Promise.all(programs.map((p) => run(p, ["--version"])));
  results.forEach((r, i) => {
    assert.equal(r.code, 0, `${programs[i]}: ${r.stderr}`);
    assert.equal(r.stdout, `${VERSION}\n`, programs[i]);
  });
});

Deno.test("--help still exits 0, for a program and a subcommand", async () => {
  for (const args of [["--help"], ["exec", "--help"]]) {
    const r = await run("fly-vault", args);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /Usage: fly-vault/);
  }
  const exec = await run("fly-vault", ["exec", "--help"]);
  assert.match(exec.stdout, /-A, --argv/);
  assert.match(exec.stdout, /login shell/);
});
