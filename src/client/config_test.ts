import assert from "node:assert/strict";
import { join } from "node:path";
import { VaultError } from "../errors/mod.ts";
import { getVault, loadConfig } from "./config.ts";

async function configWith(text: string): Promise<string> {
  const dir = await Deno.makeTempDir();
  const path = join(dir, "config.toml");
  await Deno.writeTextFile(path, text, { mode: 0o600 });
  return path;
}

const code = (c: string) => (err: unknown) => err instanceof VaultError && err.code === c;

Deno.test("the original README's example config loads", async () => {
  const path = await configWith(`
[vault.my-dev]
address = "[fdaa:x:x::x]:8443"
org = "my-org"
app = "my-dev-vault"

#[vault.my-proxy]
#machine_id = "148e21ea7e46e8"

access_token = "secret-token-here"
forward = ["8080:localhost:8080"]
rootfs = "~/.config/fly-vault/rootfs/dev-env.tar.gz"
`);
  const config = await loadConfig(path);
  const v = getVault(config, "my-dev");
  assert.equal(v.address, "[fdaa:x:x::x]:8443");
  assert.deepEqual(v.forward, ["8080:localhost:8080"]);
  assert.equal(v.oidc_issuer, "https://oidc.fly.io");
  assert.equal(v.local_simulation, false);
  assert.equal(config.knownVaultsPath, join(config.dir, "known_vaults"));
});

Deno.test("syntax errors name line and column", async () => {
  const path = await configWith('[vault.a]\naddress = "unterminated\n');
  await assert.rejects(loadConfig(path), (err: unknown) => {
    assert.ok(err instanceof VaultError && err.code === "config.syntax");
    assert.match(err.message, /config\.toml:2:\d+/);
    return true;
  });
});

Deno.test("bad values, unknown keys and plain-http issuers are refused with hints", async () => {
  await assert.rejects(
    loadConfig(await configWith('[vault.a]\naddress="h:1"\norg="o"\napp="a"\nforwrd=[]\n')),
    code("config.invalid"),
  );
  await assert.rejects(
    loadConfig(await configWith('[vault.a]\naddress="h:1"\norg="o"\napp="a"\nforward=["x"]\n')),
    code("config.invalid"),
  );
  await assert.rejects(
    loadConfig(
      await configWith('[vault.a]\naddress="h:1"\norg="o"\napp="a"\noidc_issuer="http://x"\n'),
    ),
    code("config.insecure_issuer"),
  );
  const ok = await loadConfig(
    await configWith(
      '[vault.a]\naddress="h:1"\norg="o"\napp="a"\noidc_issuer="http://x"\nlocal_simulation=true\n',
    ),
  );
  assert.equal(ok.vaults.a.oidc_issuer, "http://x");
});

Deno.test("an unknown vault lists the configured ones", async () => {
  const config = await loadConfig(await configWith('[vault.a]\naddress="h:1"\norg="o"\napp="a"\n'));
  assert.throws(() => getVault(config, "b"), (err: unknown) => {
    assert.ok(err instanceof VaultError && err.code === "config.unknown_vault");
    assert.match(err.hint, /configured vaults: a/);
    return true;
  });
});

Deno.test("persist: durations, yes/no, per vault over the top level, 10m by default, bad values refused", async () => {
  const { parsePersist, persistMsOf } = await import("./config.ts");
  assert.equal(parsePersist("10m"), 600_000);
  assert.equal(parsePersist("90s"), 90_000);
  assert.equal(parsePersist("30"), 30_000);
  assert.equal(parsePersist("500ms"), 500);
  assert.equal(parsePersist("2h"), 7_200_000);
  assert.equal(parsePersist("no"), 0);
  assert.equal(parsePersist(false), 0);
  assert.equal(parsePersist(true), 600_000);
  assert.equal(parsePersist(undefined), 0);
  assert.throws(() => parsePersist("soon"), code("config.bad_persist"));
  const path = await configWith(`persist = "5m"
[vault.a]
address = "h:1"
org = "o"
app = "a"
[vault.b]
address = "h:1"
org = "o"
app = "a"
persist = "no"
`);
  const config = await loadConfig(path);
  assert.equal(persistMsOf(config, "a", getVault(config, "a")), 300_000);
  assert.equal(persistMsOf(config, "b", getVault(config, "b")), 0);
  const unset = await loadConfig(
    await configWith(`[vault.a]\naddress = "h:1"\norg = "o"\napp = "a"\n`),
  );
  assert.equal(persistMsOf(unset, "a", getVault(unset, "a")), 600_000, "on by default: 10 minutes");
  await assert.rejects(
    loadConfig(
      await configWith(`[vault.a]\naddress = "h:1"\norg = "o"\napp = "a"\npersist = "x"\n`),
    ),
    code("config.bad_persist"),
  );
});
