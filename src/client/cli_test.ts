import assert from "node:assert/strict";
import { buildProgram, type ExecInvocation, execOperandsLiteral, fastExecArgv } from "./cli.ts";

/** What commander hands the exec action for `args` (nothing runs). */
async function viaCommander(args: string[]): Promise<ExecInvocation | string> {
  let got: ExecInvocation | undefined;
  const c = await import("./mod.ts");
  const { program } = await buildProgram(c, (inv) => {
    got = inv;
    return Promise.resolve(0);
  }, () => {});
  program.configureOutput({ writeErr: () => {}, writeOut: () => {} });
  try {
    await program.parseAsync(execOperandsLiteral(args), { from: "user" });
  } catch (err) {
    return `error: ${(err as Error).message}`;
  }
  return got ?? "no exec";
}

const normal = (inv: ExecInvocation) => JSON.parse(JSON.stringify(inv));

Deno.test("fast exec parser: every shape it accepts, commander parses alike", async () => {
  const accepted = [
    ["exec", "demo", "--", "true"],
    ["exec", "demo", "true"],
    ["exec", "demo", "echo", "a", "b"],
    ["exec", "-n", "demo", "--", "sh", "-c", "echo $HOME; exit 3"],
    ["exec", "--no-stdin", "demo", "--", "ls", "-la"],
    ["exec", "-t", "demo", "--", "htop"],
    ["exec", "--tty", "-n", "demo", "--", "top"],
    ["exec", "-e", "A=1", "--env", "B=2", "--env=C=3", "demo", "--", "env"],
    ["exec", "-C", "/tmp", "demo", "--", "pwd"],
    ["exec", "--cwd=/srv", "demo", "--", "pwd"],
    ["-v", "exec", "demo", "--", "true"],
    ["--json", "--verbose", "exec", "demo", "--", "true"],
    ["-c", "/x/config.toml", "exec", "demo", "--", "true"],
    ["--config=/x/c.toml", "--connect-timeout", "2.5", "exec", "demo", "--", "true"],
    ["--connect-timeout=3", "--no-persist", "exec", "demo", "--", "true"],
    ["exec", "demo", "--", "--", "x"],
    ["exec", "-n", "--no-persist", "demo", "--", "true"],
    ["exec", "demo", "--", "-v"],
    // As ssh: options end at the vault name.
    ["exec", "demo", "ls", "-la"],
    ["exec", "-n", "demo", "-v", "--", "x"],
    ["exec", "demo", "--help"],
    ["exec", "-A", "demo", "--", "printf", "%s", "$HOME"],
    ["exec", "--argv", "-t", "demo", "top"],
    ["exec", "-C", "/tmp", "demo", "-C", "x"],
  ];
  for (const args of accepted) {
    const fast = fastExecArgv(args);
    assert.ok(fast, `fast path takes ${args.join(" ")}`);
    assert.deepEqual(
      normal(fast),
      normal(await viaCommander(args) as ExecInvocation),
      args.join(" "),
    );
  }
});

Deno.test("fast exec parser: anything unusual goes to commander", () => {
  const declined = [
    [],
    ["--help"],
    ["exec"],
    ["exec", "--help"],
    ["exec", "demo"],
    ["exec", "demo", "--"],
    ["exec", "-tn", "demo", "--", "x"],
    ["exec", "-n", "-n", "demo", "--", "x"],
    ["exec", "--frob", "demo", "--", "x"],
    ["exec", "-e", "-n", "demo", "--", "x"],
    ["exec", "-C", "/a", "-C", "/b", "demo", "--", "x"],
    ["-v", "-v", "exec", "demo", "--", "x"],
    ["--connect-timeout", "0", "exec", "demo", "--", "x"],
    ["--connect-timeout", "soon", "exec", "demo", "--", "x"],
    ["-c", "exec", "demo", "--", "x"],
    ["--verbose=1", "exec", "demo", "--", "x"],
    ["status", "demo"],
    ["exec", "-nt", "demo", "--", "x"],
    ["--no-persist", "exec", "--no-persist", "demo", "--", "x"],
    ["exec", "-A", "-A", "demo", "--", "x"],
  ];
  for (const args of declined) assert.equal(fastExecArgv(args), null, args.join(" "));
});

Deno.test("exec: options end at the vault name in commander too (ssh's rule)", async () => {
  for (
    const [args, argv, shell] of [
      [["exec", "-nC", "/x", "demo", "ls", "-la", "/"], ["ls", "-la", "/"], true],
      [["-c", "/c.toml", "exec", "-e", "A=1", "demo", "--", "--", "-x"], ["--", "-x"], true],
      [["exec", "-tn", "--argv", "demo", "-t"], ["-t"], false],
    ] as const
  ) {
    const inv = await viaCommander([...args]) as ExecInvocation;
    assert.deepEqual(inv.argv, argv, args.join(" "));
    assert.equal(inv.shell, shell);
  }
  assert.deepEqual(execOperandsLiteral(["status", "demo", "-v"]), ["status", "demo", "-v"]);
  assert.deepEqual(execOperandsLiteral(["exec", "demo"]), ["exec", "demo"]);
});
