import assert from "node:assert/strict";
import { buildProgram, type ExecInvocation, fastExecArgv } from "./cli.ts";

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
    await program.parseAsync(args, { from: "user" });
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
    ["exec", "demo", "ls", "-la"],
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
    ["exec", "-n", "demo", "-v", "--", "x"],
    ["--no-persist", "exec", "--no-persist", "demo", "--", "x"],
  ];
  for (const args of declined) assert.equal(fastExecArgv(args), null, args.join(" "));
});
