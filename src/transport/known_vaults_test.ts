import assert from "node:assert/strict";
import { join } from "node:path";
import { VaultError } from "../errors/mod.ts";
import {
  BOOTSTRAP_CA_CERT_PEM,
  createMachineIdentity,
  identityDerProblem,
  pemToDer,
} from "../pki/mod.ts";
import {
  forgetKnownVault,
  type KnownVault,
  lookupKnownVault,
  readKnownVaults,
  rememberKnownVault,
} from "./mod.ts";
import { trustFlagsIn } from "./trust_env.ts";

async function entry(name: string, extra: Partial<KnownVault> = {}): Promise<KnownVault> {
  const id = await createMachineIdentity({ machineId: "m1" });
  return {
    name,
    address: "[fdaa:0:1::2]:8443",
    org: "my-org",
    app: "my app", // spaces are escaped
    issuer: "https://oidc.fly.io",
    machineId: "m1",
    identityDer: id.identityDer,
    ...extra,
  };
}

Deno.test("v2 lines round-trip what was attested, escaped, one line per vault", async () => {
  const dir = await Deno.makeTempDir();
  const path = join(dir, "known_vaults");
  const a = await entry("dev");
  const b = await entry("other\nname", { org: "o%2", machineId: "m2" });
  await rememberKnownVault(path, a);
  await rememberKnownVault(path, b);
  assert.deepEqual(await readKnownVaults(path), [a, b]);
  const text = await Deno.readTextFile(path);
  assert.match(
    text,
    /^dev \[fdaa:0:1::2\]:8443 v2 org=my-org app=my%20app issuer=https:\/\/oidc\.fly\.io machine=m1 identity=[A-Za-z0-9+/=]+$/m,
  );
  assert.match(text, /^other%0Aname \S+ v2 org=o%252 /m);
  assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
  assert.equal(await forgetKnownVault(path, "dev"), true);
  assert.equal(await forgetKnownVault(path, "dev"), false);
  assert.deepEqual(await readKnownVaults(path), [b]);
});

Deno.test("old-format, broken and non-identity entries read as no pin", async () => {
  const dir = await Deno.makeTempDir();
  const path = join(dir, "known_vaults");
  const good = await entry("good");
  await rememberKnownVault(path, good);
  const line = (await Deno.readTextFile(path)).split("\n")[1];
  const boot = btoa(String.fromCharCode(...pemToDer(BOOTSTRAP_CA_CERT_PEM)));
  const leafOnly = await createMachineIdentity();
  const leafDer = pemToDer(leafOnly.chainPem.split("-----END CERTIFICATE-----")[0]);
  const bad = [
    "dev 127.0.0.1:1 AAAA", // the old format
    line.replace(/^good/, "boot").replace(/identity=\S+/, `identity=${boot}`),
    line.replace(/^good/, "junk").replace(/identity=\S+/, "identity=bm90IGEgY2VydA=="),
    line.replace(/^good/, "b64").replace(/identity=\S+/, "identity=!!!"),
    line.replace(/^good/, "leaf").replace(
      /identity=\S+/,
      `identity=${btoa(String.fromCharCode(...leafDer))}`,
    ),
    line.replace(/^good/, "short").replace(/ machine=\S+/, ""),
    line.replace(/^good/, "v3").replace(" v2 ", " v3 "),
  ];
  await Deno.writeTextFile(path, [...bad, line, ""].join("\n"));
  assert.deepEqual((await readKnownVaults(path)).map((v) => v.name), ["good"]);
  assert.equal(await lookupKnownVault(path, "boot"), undefined);
  // A rewrite keeps the valid entries only.
  assert.equal(await forgetKnownVault(path, "dev"), true);
  assert.deepEqual((await readKnownVaults(path)).map((v) => v.name), ["good"]);
});

Deno.test("identityDerProblem: only a CA issued under the bootstrap CA, never the bootstrap CA", async () => {
  const id = await createMachineIdentity();
  assert.equal(identityDerProblem(id.identityDer), undefined);
  assert.match(identityDerProblem(pemToDer(BOOTSTRAP_CA_CERT_PEM))!, /bootstrap CA/);
  const leaf = pemToDer(id.chainPem.split("-----END CERTIFICATE-----")[0]);
  assert.match(identityDerProblem(leaf)!, /not issued by the bootstrap CA/);
  assert.match(identityDerProblem(new Uint8Array([0x30, 0x03, 0x02, 0x01]))!, /not a DER/);
  assert.match(identityDerProblem(id.identityDer.subarray(0, 100))!, /not a DER/);
  const trailing = new Uint8Array([...id.identityDer, 0]);
  assert.match(identityDerProblem(trailing)!, /not a DER/);
});

Deno.test("a known_vaults file or directory others can write is refused with a hint", async () => {
  const dir = await Deno.makeTempDir();
  const path = join(dir, "known_vaults");
  await rememberKnownVault(path, await entry("dev"));
  const refused = (hint: RegExp) => (err: unknown) =>
    err instanceof VaultError && err.code === "known_vaults.loose_mode" && hint.test(err.hint);
  await Deno.chmod(path, 0o620);
  await assert.rejects(readKnownVaults(path), refused(/^chmod 600 /));
  await assert.rejects(rememberKnownVault(path, await entry("x")), refused(/^chmod 600 /));
  await Deno.chmod(path, 0o644); // readable is fine, as for ssh's known_hosts
  assert.equal((await readKnownVaults(path)).length, 1);
  await Deno.chmod(dir, 0o757);
  await assert.rejects(lookupKnownVault(path, "dev"), refused(/^chmod 700 /));
  await Deno.chmod(dir, 0o700);
});

Deno.test("trustFlagsIn finds Deno's trust flags in both spellings", () => {
  assert.deepEqual(
    trustFlagsIn([
      "run",
      "-A",
      "--cert",
      "/a.pem",
      "--cert=/b.pem",
      "--unsafely-ignore-certificate-errors=x.example",
      "--quiet",
    ]),
    [
      { flag: "--cert", value: "/a.pem" },
      { flag: "--cert", value: "/b.pem" },
      { flag: "--unsafely-ignore-certificate-errors" },
    ],
  );
  assert.deepEqual(trustFlagsIn(["run", "-A", "--certificate-x"]), []);
});
