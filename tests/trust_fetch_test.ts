/**
 * The client restarts itself without DENO_CERT & co. (so QUIC trusts only
 * its pins), but plain HTTPS — the OIDC issuer's keys behind a TLS-inspecting
 * proxy — still trusts the CAs the user configured. Exit status and the
 * program's own arguments pass through the restart untouched.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import "reflect-metadata";
import * as x509 from "@peculiar/x509";
import { derToPem } from "../src/pki/mod.ts";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../", import.meta.url));

const ALG = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" } as const;
const notBefore = new Date(Date.now() - 3600_000);
const notAfter = new Date(Date.now() + 86400_000);

async function keyPem(key: CryptoKey): Promise<string> {
  return derToPem(new Uint8Array(await crypto.subtle.exportKey("pkcs8", key)), "PRIVATE KEY");
}

/** A corporate CA and a server certificate for 127.0.0.1 issued by it. */
async function corporatePki() {
  const caKeys = await crypto.subtle.generateKey(ALG, true, ["sign", "verify"]) as CryptoKeyPair;
  const ca = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: "01",
    name: "CN=Corporate TLS inspection CA",
    notBefore,
    notAfter,
    keys: caKeys,
    signingAlgorithm: ALG,
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true),
    ],
  });
  const leafKeys = await crypto.subtle.generateKey(ALG, true, ["sign", "verify"]) as CryptoKeyPair;
  const leaf = await x509.X509CertificateGenerator.create({
    serialNumber: "02",
    subject: "CN=127.0.0.1",
    issuer: ca.subject,
    notBefore,
    notAfter,
    publicKey: leafKeys.publicKey,
    signingKey: caKeys.privateKey,
    signingAlgorithm: ALG,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension([{ type: "ip", value: "127.0.0.1" }]),
    ],
  });
  return {
    caPem: ca.toString("pem") + "\n",
    certPem: leaf.toString("pem") + "\n",
    keyPem: await keyPem(leafKeys.privateKey),
  };
}

Deno.test("after the restart, HTTPS still trusts the configured CAs; QUIC's store is clean", async () => {
  const dir = await Deno.makeTempDir();
  const pki = await corporatePki();
  const caFile = join(dir, "corp.pem");
  await Deno.writeTextFile(caFile, pki.caPem);
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, cert: pki.certPem, key: pki.keyPem, onListen() {} },
    () => new Response("keys"),
  );
  const url = `https://127.0.0.1:${server.addr.port}/jwks`;
  const run = async (env: Record<string, string>, denoFlags: string[] = []) => {
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "--quiet",
        ...denoFlags,
        join(ROOT, "tests", "trust_fetch_fixture.ts"),
        url,
        "--cert",
        "not-ours-to-strip",
      ],
      // Only what the case sets: this sandbox may itself set NODE_EXTRA_CA_CERTS.
      env: { PATH: Deno.env.get("PATH") ?? "", HOME: dir, ...env },
      clearEnv: true,
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(30_000),
    }).output();
    const stderr = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 7, stderr);
    return JSON.parse(new TextDecoder().decode(out.stdout));
  };
  try {
    const plain = await run({});
    assert.match(plain.fetched, /^failed: /, "control: the corporate CA is needed");
    assert.equal(plain.restarted, false);

    for (
      const [env, flags] of [
        [{ DENO_CERT: caFile }, []],
        [{ DENO_TLS_CA_STORE: "mozilla,system", SSL_CERT_FILE: caFile }, []],
        [{ NODE_EXTRA_CA_CERTS: caFile }, []],
        [{}, ["--cert", caFile]],
        [{}, [`--cert=${caFile}`]],
      ] as [Record<string, string>, string[]][]
    ) {
      const r = await run(env, flags);
      const what = JSON.stringify([env, flags]);
      assert.equal(r.restarted, true, what);
      assert.deepEqual(
        r.pollution,
        [],
        `${what}: the restarted process trusts only Mozilla's roots`,
      );
      assert.equal(r.fetched, "200 keys", what);
      assert.deepEqual(r.args, ["--cert", "not-ours-to-strip"], what);
    }
  } finally {
    await server.shutdown();
  }
});
