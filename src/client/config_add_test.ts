import assert from "node:assert/strict";
import { join } from "node:path";
import { loadConfig } from "./config.ts";

const BIN = new URL("../../bin/fly-vault.ts", import.meta.url).pathname;

async function configAdd(config: string, args: string[], stdin: string) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--unstable-net", BIN, "--config", config, "config", "add", ...args],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  const w = child.stdin.getWriter();
  await w.write(new TextEncoder().encode(stdin));
  await w.close();
  const out = await child.output();
  return { code: out.code, stderr: new TextDecoder().decode(out.stderr) };
}

const TOKEN = "tok-" + "x".repeat(40);

Deno.test("config add writes a loadable 0600 table with the token from stdin, refuses to overwrite without --force", async () => {
  const dir = await Deno.makeTempDir();
  const config = join(dir, "sub", "config.toml");
  const first = await configAdd(
    config,
    ["demo", "--address", "127.0.0.1:8443", "--org", "my-org", "--app", "my-app"],
    TOKEN + "\n",
  );
  assert.equal(first.code, 0, first.stderr);
  assert.ok(!first.stderr.includes(TOKEN), "the token is never printed");
  assert.equal((await Deno.stat(config)).mode! & 0o777, 0o600);
  let loaded = await loadConfig(config);
  assert.deepEqual(
    [loaded.vaults.demo.address, loaded.vaults.demo.org, loaded.vaults.demo.app],
    ["127.0.0.1:8443", "my-org", "my-app"],
  );
  assert.equal(loaded.vaults.demo.access_token, TOKEN);

  // A second vault goes beside it.
  const second = await configAdd(
    config,
    ["other", "--address", "[::1]:9", "--org", "o", "--app", "a", "--machine-id", "abc123"],
    "t2",
  );
  assert.equal(second.code, 0, second.stderr);

  const again = await configAdd(
    config,
    ["demo", "--address", "127.0.0.1:1", "--org", "o", "--app", "a"],
    "t3",
  );
  assert.notEqual(again.code, 0);
  assert.match(again.stderr, /error\[config\.vault_exists\]/);
  assert.match(again.stderr, /--force/);
  assert.equal((await loadConfig(config)).vaults.demo.address, "127.0.0.1:8443");

  const forced = await configAdd(
    config,
    ["demo", "--address", "127.0.0.1:1", "--org", "o", "--app", "a", "--force"],
    "t3",
  );
  assert.equal(forced.code, 0, forced.stderr);
  loaded = await loadConfig(config);
  assert.equal(loaded.vaults.demo.address, "127.0.0.1:1");
  assert.equal(loaded.vaults.demo.access_token, "t3");
  assert.equal(loaded.vaults.other.machine_id, "abc123");
  assert.equal((await Deno.stat(config)).mode! & 0o777, 0o600);

  const noToken = await configAdd(
    config,
    ["third", "--address", "h:1", "--org", "o", "--app", "a"],
    "",
  );
  assert.notEqual(noToken.code, 0);
  assert.match(noToken.stderr, /config\.no_access_token/);
  const badAddr = await configAdd(
    config,
    ["third", "--address", "nope", "--org", "o", "--app", "a"],
    "t",
  );
  assert.notEqual(badAddr.code, 0);
  assert.equal((await loadConfig(config)).vaults.third, undefined);
  await Deno.remove(dir, { recursive: true });
});
