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
    code("config.unknown_key"),
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

Deno.test("a misspelt key is named with its file, line and column, and the closest key is suggested", async () => {
  const path = await configWith(
    '# mine\n[vault.demo]\n  adress = "h:1"\norg = "o"\napp = "a"\n',
  );
  await assert.rejects(loadConfig(path), (err: unknown) => {
    assert.ok(err instanceof VaultError && err.code === "config.unknown_key", String(err));
    assert.ok(err.message.includes(`${path}:3:3:`), err.message);
    assert.match(err.message, /\[vault\.demo\] has an unknown key 'adress'/);
    assert.equal(err.hint, "did you mean 'address'?");
    return true;
  });
});

Deno.test("a missing key names the [vault.NAME] table's line and only that key", async () => {
  const path = await configWith(
    '[vault.other]\naddress = "h:1"\norg = "o"\napp = "a"\n\n[vault.demo]\naddress = "h:1"\napp = "a"\n',
  );
  await assert.rejects(loadConfig(path), (err: unknown) => {
    assert.ok(err instanceof VaultError && err.code === "config.missing_key", String(err));
    assert.ok(err.message.startsWith(`${path}:6:1: [vault.demo] has no 'org'`), err.message);
    assert.doesNotMatch(err.message + err.hint, /rootfs_url|local_simulation/);
    return true;
  });
});

Deno.test("a bad address or value names file, line and the key as written", async () => {
  const path = await configWith('[vault."demo"]\norg = "o"\napp = "a"\naddress = "nohostport"\n');
  await assert.rejects(loadConfig(path), (err: unknown) => {
    assert.ok(err instanceof VaultError && err.code === "config.bad_address", String(err));
    assert.ok(
      err.message.startsWith(`${path}:4:1: [vault.demo] address = "nohostport"`),
      err.message,
    );
    return true;
  });
  const bad = await configWith('[vault.a]\naddress = "h:1"\norg = "O!"\napp = "a"\n');
  await assert.rejects(loadConfig(bad), (err: unknown) => {
    assert.ok(err instanceof VaultError && err.code === "config.invalid", String(err));
    assert.ok(err.message.startsWith(`${bad}:3:1: [vault.a] org:`), err.message);
    return true;
  });
});

Deno.test("--config naming a missing file is config.unreadable, not an empty config", async () => {
  const dir = await Deno.makeTempDir();
  const missing = join(dir, "missing.toml");
  await assert.rejects(loadConfig(missing), (err: unknown) => {
    assert.ok(err instanceof VaultError && err.code === "config.unreadable", String(err));
    assert.ok(err.message.includes(missing), err.message);
    return true;
  });
});

Deno.test("the real fly-vault: --config missing.toml says it cannot open the file", async () => {
  const dir = await Deno.makeTempDir();
  const missing = join(dir, "missing.toml");
  const bin = new URL("../../bin/fly-vault.ts", import.meta.url).pathname;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--unstable-net", bin, "status", "demo", "--config", missing],
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert.notEqual(out.code, 0);
  assert.match(stderr, /error\[config\.unreadable\]: cannot open .*missing\.toml/);
  assert.doesNotMatch(stderr, /no vault named/);
});

Deno.test("a misspelt table or a vault key outside any table is named, not ignored", async () => {
  const typo = await configWith('persist = "no"\n\n[valut.demo]\naddress = "h:1"\n');
  await assert.rejects(loadConfig(typo), (err: unknown) => {
    assert.ok(err instanceof VaultError && err.code === "config.unknown_key", String(err));
    assert.ok(err.message.startsWith(`${typo}:3:1: unknown table 'valut'`), err.message);
    assert.equal(err.hint, "did you mean [vault.NAME]?");
    return true;
  });
  const stray = await configWith('address = "h:1"\n[vault.demo]\norg = "o"\n');
  await assert.rejects(loadConfig(stray), (err: unknown) => {
    assert.ok(err instanceof VaultError && err.code === "config.unknown_key", String(err));
    assert.ok(err.message.startsWith(`${stray}:1:1: unknown key 'address'`), err.message);
    assert.match(err.hint, /belongs in a \[vault\.NAME\] table/);
    return true;
  });
  const persit = await configWith('persit = "1m"\n');
  await assert.rejects(loadConfig(persit), /persit/);
});
