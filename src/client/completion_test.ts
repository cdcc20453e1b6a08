import assert from "node:assert/strict";
import { join } from "node:path";
import { COMMANDS } from "./completion.ts";

const BIN = new URL("../../bin/fly-vault.ts", import.meta.url).pathname;

async function flyVault(args: string[], env: Record<string, string> = {}) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--unstable-net", BIN, ...args],
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1", ...env },
  }).output();
  return {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  };
}

async function has(program: string): Promise<boolean> {
  try {
    await new Deno.Command(program, { args: ["--version"], stdout: "null", stderr: "null" })
      .output();
    return true;
  } catch {
    return false;
  }
}

Deno.test("completion bash: sourced by bash, registers fly-vault, completes commands, options and vault names", async () => {
  const script = await flyVault(["completion", "bash"]);
  assert.equal(script.code, 0, script.stderr);
  const dir = await Deno.makeTempDir();
  await Deno.writeTextFile(join(dir, "fv.bash"), script.stdout);
  await Deno.writeTextFile(
    join(dir, "config.toml"),
    '[vault.demo]\naddress = "h:1"\n\n[vault."my-dev"]\naddress = "h:1"\n',
  );
  const probe = `
source "$1"
complete -p fly-vault
c() { COMP_WORDS=("$@"); COMP_CWORD=$((\${#COMP_WORDS[@]} - 1)); COMPREPLY=(); _fly_vault; echo "\${COMPREPLY[*]}"; }
c fly-vault st
c fly-vault exec ''
c fly-vault forward --fo
c fly-vault completion ''
`;
  const out = await new Deno.Command("bash", {
    args: ["-c", probe, "probe", join(dir, "fv.bash")],
    stdout: "piped",
    stderr: "piped",
    env: { FLY_VAULT_CONFIG_DIR: dir },
  }).output();
  const lines = new TextDecoder().decode(out.stdout).trim().split("\n");
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  assert.equal(lines[0], "complete -F _fly_vault fly-vault");
  assert.equal(lines[1], "status");
  assert.equal(lines[2], "demo my-dev");
  assert.equal(lines[3], "--forward");
  assert.equal(lines[4], "bash zsh fish");
  await Deno.remove(dir, { recursive: true });
});

Deno.test("completion zsh and fish: scripts that parse (when the shell is here) and name every command", async () => {
  for (const shell of ["zsh", "fish"]) {
    const script = await flyVault(["completion", shell]);
    assert.equal(script.code, 0, script.stderr);
    for (const c of COMMANDS) assert.ok(script.stdout.includes(c.name), `${shell}: ${c.name}`);
    if (await has(shell)) {
      const dir = await Deno.makeTempDir();
      await Deno.writeTextFile(join(dir, "s"), script.stdout);
      const out = await new Deno.Command(shell, { args: ["-n", join(dir, "s")], stderr: "piped" })
        .output();
      assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
      await Deno.remove(dir, { recursive: true });
    }
  }
  const bad = await flyVault(["completion", "tcsh"]);
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /usage\.bad_shell/);
});

Deno.test("every subcommand's --help has an Examples block (the README promises them); completion knows every command", async () => {
  const top = await flyVault(["--help"]);
  const listed = [
    ...top.stdout.split("\nCommands:\n")[1].split("\n\n")[0].matchAll(/^ {2}([a-z-]+)/gm),
  ].map((m) => m[1]);
  assert.ok(listed.length > 10, top.stdout);
  assert.deepEqual(listed.toSorted(), COMMANDS.map((c) => c.name).toSorted());
  const names = COMMANDS.map((c) => c.name).filter((n) => n !== "help");
  for (const name of [...names.filter((n) => n !== "config"), "config add"]) {
    const out = await flyVault([...name.split(" "), "--help"]);
    assert.equal(out.code, 0, `${name}: ${out.stderr}`);
    assert.match(out.stdout, /\nExamples?:\n {2}/, `${name} --help has no examples`);
  }
});
