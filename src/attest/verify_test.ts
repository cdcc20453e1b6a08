import assert from "node:assert/strict";
import { isVaultError, type VaultError } from "../errors/mod.ts";
import { type OidcIssuer, startOidcIssuer } from "../flysim/oidc.ts";
import { forgeries } from "../flysim/forge.ts";
import {
  type AttestationExpectation,
  createJwksCache,
  FLY_CLAIM_NAMES,
  verifyAttestationToken,
} from "./mod.ts";
import { mapJoseError } from "./verify.ts";
import { errors, exportJWK, generateKeyPair } from "jose";

const ORG = "acme";
const APP = "vault-tenants";
const MACHINE = "148e21ea7e46e8";
const AUDIENCE = "fly-vault:v1:47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU";

const identity = {
  org: ORG,
  app: APP,
  machine_id: MACHINE,
  machine_name: "tenant-one",
  region: "ord",
  image: "registry.fly.io/vault:1",
};

function expectation(issuer: OidcIssuer, extra: Partial<AttestationExpectation> = {}) {
  return {
    issuerBase: issuer.baseUrl,
    org: ORG,
    app: APP,
    machineId: MACHINE,
    audience: AUDIENCE,
    allowInsecureIssuer: true,
    ...extra,
  };
}

async function refusal(p: Promise<unknown>): Promise<VaultError> {
  try {
    await p;
  } catch (err) {
    assert.ok(isVaultError(err), `expected a VaultError, got ${err}`);
    assert.ok(err.message.length > 0 && err.hint.length > 0, "message and hint are set");
    return err;
  }
  assert.fail("expected the token to be refused");
}

async function withIssuer(fn: (issuer: OidcIssuer) => Promise<void>) {
  const issuer = await startOidcIssuer();
  try {
    await fn(issuer);
  } finally {
    await issuer.close();
  }
}

Deno.test("a genuine flysim token is accepted and its claims returned", () =>
  withIssuer(async (issuer) => {
    const token = await issuer.mint({ ...identity, aud: AUDIENCE });
    const claims = await verifyAttestationToken(token, expectation(issuer), createJwksCache());
    assert.equal(claims.iss, `${issuer.baseUrl}/${ORG}`);
    assert.equal(claims.aud, AUDIENCE);
    assert.equal(claims.app_name, APP);
    assert.equal(claims.machine_id, MACHINE);
    assert.equal(claims.sub, `${ORG}:${APP}:tenant-one`);
    assert.deepEqual(Object.keys(claims).sort(), [...FLY_CLAIM_NAMES].sort());
    // Without a machine id configured, any machine of the app passes.
    await verifyAttestationToken(token, expectation(issuer, { machineId: undefined }));
  }));

Deno.test("every forgery is refused with the code naming its check", () =>
  withIssuer(async (issuer) => {
    const cache = createJwksCache();
    const ctx = { issuer, identity, audience: AUDIENCE };
    const seen: string[] = [];
    for (const f of forgeries) {
      const token = await f.make(ctx);
      const err = await refusal(verifyAttestationToken(token, expectation(issuer), cache));
      assert.equal(err.code, f.expectCode, `${f.name}: ${err.message}`);
      assert.ok(!err.message.includes(token), "the message does not echo the token");
      seen.push(f.expectCode);
    }
    for (
      const code of [
        "attest.bad_signature",
        "attest.unknown_kid",
        "attest.bad_algorithm",
        "attest.wrong_issuer",
        "attest.wrong_audience",
        "attest.wrong_app",
        "attest.wrong_machine",
        "attest.expired",
        "attest.not_yet_valid",
        "attest.missing_claims",
      ]
    ) assert.ok(seen.includes(code), `the matrix covers ${code}`);
    // One discovery for the whole matrix; the unknown kid refetched the JWKS once.
    assert.equal(issuer.requests.discovery, 1);
    assert.equal(issuer.requests.jwks, 2);
  }));

Deno.test("the wrong_machine forgery passes when no machine id is configured", () =>
  withIssuer(async (issuer) => {
    const f = forgeries.find((f) => f.needsMachineId)!;
    const token = await f.make({ issuer, identity, audience: AUDIENCE });
    await verifyAttestationToken(token, expectation(issuer, { machineId: undefined }));
  }));

Deno.test("discovery and JWKS are fetched once per issuer and cached", () =>
  withIssuer(async (issuer) => {
    const cache = createJwksCache();
    for (let i = 0; i < 5; i++) {
      const token = await issuer.mint({ ...identity, aud: AUDIENCE });
      await verifyAttestationToken(token, expectation(issuer), cache);
    }
    assert.deepEqual(issuer.requests, { discovery: 1, jwks: 1 });
    // Concurrent first verifications share one fetch too.
    const fresh = createJwksCache();
    const tokens = await Promise.all(
      Array.from({ length: 4 }, () => issuer.mint({ ...identity, aud: AUDIENCE })),
    );
    await Promise.all(tokens.map((t) => verifyAttestationToken(t, expectation(issuer), fresh)));
    assert.deepEqual(issuer.requests, { discovery: 2, jwks: 2 });
  }));

Deno.test("a rotated key is found by refetching the JWKS once", () =>
  withIssuer(async (issuer) => {
    const cache = createJwksCache();
    await verifyAttestationToken(
      await issuer.mint({ ...identity, aud: AUDIENCE }),
      expectation(issuer),
      cache,
    );
    const oldKid = issuer.kid;
    const newKid = await issuer.rotateKey({ dropOld: true });
    assert.notEqual(newKid, oldKid);
    const claims = await verifyAttestationToken(
      await issuer.mint({ ...identity, aud: AUDIENCE }),
      expectation(issuer),
      cache,
    );
    assert.equal(claims.machine_id, MACHINE);
    assert.deepEqual(issuer.requests, { discovery: 1, jwks: 2 });
    // The new key is cached now: no further fetch.
    await verifyAttestationToken(
      await issuer.mint({ ...identity, aud: AUDIENCE }),
      expectation(issuer),
      cache,
    );
    assert.deepEqual(issuer.requests, { discovery: 1, jwks: 2 });
  }));

Deno.test("an unknown kid refetches once per verification, never in a loop", () =>
  withIssuer(async (issuer) => {
    const cache = createJwksCache();
    const unknown = forgeries.find((f) => f.expectCode === "attest.unknown_kid")!;
    const ctx = { issuer, identity, audience: AUDIENCE };
    const err = await refusal(
      verifyAttestationToken(await unknown.make(ctx), expectation(issuer), cache),
    );
    assert.equal(err.code, "attest.unknown_kid");
    assert.match(err.message, /forged-kid/);
    assert.deepEqual(issuer.requests, { discovery: 1, jwks: 2 });
    const again = await refusal(
      verifyAttestationToken(await unknown.make(ctx), expectation(issuer), cache),
    );
    assert.equal(again.code, "attest.unknown_kid");
    assert.deepEqual(issuer.requests, { discovery: 1, jwks: 3 });
  }));

Deno.test("a non-https issuer is refused unless the vault is a local simulation", () =>
  withIssuer(async (issuer) => {
    const token = await issuer.mint({ ...identity, aud: AUDIENCE });
    const err = await refusal(
      verifyAttestationToken(token, expectation(issuer, { allowInsecureIssuer: false })),
    );
    assert.equal(err.code, "attest.insecure_issuer");
    assert.deepEqual(issuer.requests, { discovery: 0, jwks: 0 }, "nothing fetched over http");
    const bad = await refusal(
      verifyAttestationToken(token, expectation(issuer, { issuerBase: "file:///etc" })),
    );
    assert.equal(bad.code, "attest.insecure_issuer");
  }));

Deno.test("an unreachable issuer is attest.jwks_unreachable", async () => {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  await withIssuer(async (issuer) => {
    const token = await issuer.mint({ ...identity, aud: AUDIENCE });
    const err = await refusal(
      verifyAttestationToken(
        token,
        expectation(issuer, { issuerBase: `http://127.0.0.1:${port}` }),
      ),
    );
    assert.equal(err.code, "attest.jwks_unreachable");
    assert.match(err.message, /openid-configuration/);
  });
});

Deno.test("a discovery document naming another issuer, or broken, is refused", async () => {
  let doc: unknown = {};
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    () => Response.json(doc),
  );
  const base = `http://127.0.0.1:${server.addr.port}`;
  try {
    await withIssuer(async (issuer) => {
      const token = await issuer.mint({ ...identity, aud: AUDIENCE });
      const exp = expectation(issuer, { issuerBase: base });
      doc = { issuer: `https://oidc.fly.io/${ORG}`, jwks_uri: `${base}/${ORG}/.well-known/jwks` };
      assert.equal((await refusal(verifyAttestationToken(token, exp))).code, "attest.wrong_issuer");
      doc = { issuer: `${base}/${ORG}` };
      assert.equal(
        (await refusal(verifyAttestationToken(token, exp))).code,
        "attest.jwks_unreachable",
      );
      // jwks_uri answers something that is not a key set.
      doc = { issuer: `${base}/${ORG}`, jwks_uri: `${base}/jwks` };
      const notJwks = await refusal(verifyAttestationToken(token, exp));
      assert.equal(notJwks.code, "attest.jwks_unreachable");
      assert.match(notJwks.message, /JSON Web Key Set/);
    });
  } finally {
    await server.shutdown();
  }
});

Deno.test("malformed tokens are attest.malformed", () =>
  withIssuer(async (issuer) => {
    for (const token of ["", "abc", "a.b", "a.b.c", "!!.??.**", "x".repeat(20_000)]) {
      const err = await refusal(verifyAttestationToken(token, expectation(issuer)));
      assert.equal(err.code, "attest.malformed", JSON.stringify(token.slice(0, 20)));
    }
    // A valid header over a payload that is not JSON.
    const genuine = await issuer.mint({ ...identity, aud: AUDIENCE });
    const [h, , s] = genuine.split(".");
    const err = await refusal(verifyAttestationToken(`${h}.bm90IGpzb24.${s}`, expectation(issuer)));
    assert.ok(["attest.malformed", "attest.bad_signature"].includes(err.code), err.code);
  }));

Deno.test("clock skew: tolerated within the window, refused beyond it", () =>
  withIssuer(async (issuer) => {
    const cache = createJwksCache();
    const iat = Math.floor(Date.now() / 1000) - 630; // expired 30 s ago
    const token = await issuer.mint({ ...identity, aud: AUDIENCE, iat, nbf: iat, exp: iat + 600 });
    await verifyAttestationToken(token, expectation(issuer), cache);
    const err = await refusal(
      verifyAttestationToken(token, expectation(issuer, { clockSkewSeconds: 0 }), cache),
    );
    assert.equal(err.code, "attest.expired");
    // An injected clock decides, not the wall clock.
    await verifyAttestationToken(
      token,
      expectation(issuer, { clockSkewSeconds: 0, now: new Date((iat + 10) * 1000) }),
      cache,
    );
    // iat in the future with a valid nbf is still refused.
    const future = Math.floor(Date.now() / 1000) + 3600;
    const early = await issuer.mint({
      ...identity,
      aud: AUDIENCE,
      iat: future,
      nbf: future - 7200,
      exp: future + 600,
    });
    const e2 = await refusal(verifyAttestationToken(early, expectation(issuer), cache));
    assert.equal(e2.code, "attest.not_yet_valid");
  }));

Deno.test("a token for another org's issuer at the same host is wrong_issuer", () =>
  withIssuer(async (issuer) => {
    const token = await issuer.mint({ ...identity, org: "other-org", aud: AUDIENCE });
    const err = await refusal(verifyAttestationToken(token, expectation(issuer)));
    assert.equal(err.code, "attest.wrong_issuer");
    assert.match(err.message, /other-org/);
  }));

Deno.test("a key set holding a private key is refused as attest.jwks_invalid", async () => {
  const { privateKey } = await generateKeyPair("RS256", { modulusLength: 2048, extractable: true });
  const leaked = { ...(await exportJWK(privateKey)), alg: "RS256", use: "sig" };
  let jwks: unknown = {};
  const server: Deno.HttpServer<Deno.NetAddr> = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen() {},
  }, (req): Response => {
    const base = `http://127.0.0.1:${server.addr.port}`;
    return new URL(req.url).pathname.endsWith("openid-configuration")
      ? Response.json({ issuer: `${base}/${ORG}`, jwks_uri: `${base}/jwks` })
      : Response.json(jwks);
  });
  const base = `http://127.0.0.1:${server.addr.port}`;
  try {
    await withIssuer(async (issuer) => {
      const token = await issuer.mint({ ...identity, aud: AUDIENCE, iss: `${base}/${ORG}` });
      const exp = expectation(issuer, { issuerBase: base });
      // Under the kid the token names, so jose would import it (and throw JWKSInvalid).
      jwks = { keys: [{ ...leaked, kid: issuer.kid }] };
      const err = await refusal(verifyAttestationToken(token, exp));
      assert.equal(err.code, "attest.jwks_invalid");
      assert.match(err.message, /publishes a private key \(kid "flysim-/);
    });
  } finally {
    await server.shutdown();
  }
});

Deno.test("every jose error class maps to a VaultError with an attest code", () => {
  const ctx = {
    issuer: "https://oidc.fly.io/acme",
    header: { alg: "RS256" },
    now: new Date(),
    jwksUri: "https://oidc.fly.io/acme/.well-known/jwks",
  };
  const classes = Object.values(errors).filter((c) => typeof c === "function");
  assert.ok(classes.length >= 14, `jose exports ${classes.length} error classes`);
  for (const Cls of classes) {
    // deno-lint-ignore no-explicit-any
    const err = new (Cls as any)("x", { exp: 1, nbf: 1 }, "nbf", "check_failed");
    const mapped = mapJoseError(err, ctx);
    assert.ok(isVaultError(mapped), `${Cls.name} is mapped`);
    assert.match(mapped.code, /^attest\./, Cls.name);
  }
  assert.equal(
    (mapJoseError(new errors.JWKSInvalid("x"), ctx) as VaultError).code,
    "attest.jwks_invalid",
  );
});

/** A CA, and a certificate it signed for 127.0.0.1 (rustls refuses a self-signed leaf). */
async function loopbackCert(): Promise<{ ca: string; cert: string; key: string }> {
  await import("reflect-metadata");
  const x509 = await import("@peculiar/x509");
  const EC = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" } as const;
  const notBefore = new Date(Date.now() - 3600_000);
  const notAfter = new Date(Date.now() + 86400_000);
  const caKeys = await crypto.subtle.generateKey(EC, true, ["sign", "verify"]) as CryptoKeyPair;
  const ca = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: "01",
    name: "CN=verify_test CA",
    notBefore,
    notAfter,
    keys: caKeys,
    signingAlgorithm: EC,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true),
    ],
  });
  const leafKeys = await crypto.subtle.generateKey(EC, true, ["sign", "verify"]) as CryptoKeyPair;
  const leaf = await x509.X509CertificateGenerator.create({
    serialNumber: "02",
    subject: "CN=127.0.0.1",
    issuer: ca.subject,
    notBefore,
    notAfter,
    publicKey: leafKeys.publicKey,
    signingKey: caKeys.privateKey,
    signingAlgorithm: EC,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension([{ type: "ip", value: "127.0.0.1" }]),
    ],
  });
  const pkcs8 = new Uint8Array(await crypto.subtle.exportKey("pkcs8", leafKeys.privateKey));
  const b64 = btoa(String.fromCharCode(...pkcs8)).replace(/.{64}/g, "$&\n");
  return {
    ca: ca.toString("pem") + "\n",
    cert: leaf.toString("pem") + "\n",
    key: `-----BEGIN PRIVATE KEY-----\n${b64}\n-----END PRIVATE KEY-----\n`,
  };
}

Deno.test("an https issuer redirecting to plain http is refused before any plain request", async () => {
  const { ca, cert, key } = await loopbackCert();
  let plainRequests = 0;
  const plain = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, () => {
    plainRequests++;
    return Response.json({});
  });
  const plainBase = `http://127.0.0.1:${plain.addr.port}`;
  // What each path of the https issuer answers; set per case below.
  let routes: Record<string, () => Response> = {};
  const tls = Deno.serve({ hostname: "127.0.0.1", port: 0, cert, key, onListen() {} }, (req) => {
    const route = routes[new URL(req.url).pathname];
    return route ? route() : new Response("not found", { status: 404 });
  });
  const base = `https://127.0.0.1:${tls.addr.port}`;
  const client = Deno.createHttpClient({ caCerts: [ca] });
  const redirect = (to: string, status = 302) =>
    new Response(null, { status, headers: { location: to } });
  try {
    await withIssuer(async (issuer) => {
      const token = await issuer.mint({ ...identity, aud: AUDIENCE, iss: `${base}/${ORG}` });
      const exp = expectation(issuer, { issuerBase: base, allowInsecureIssuer: false });
      const verify = () => verifyAttestationToken(token, exp, createJwksCache({ client }));
      const discovery = `/${ORG}/.well-known/openid-configuration`;
      const goodDiscovery = () =>
        Response.json({ issuer: `${base}/${ORG}`, jwks_uri: `${base}/${ORG}/jwks` });

      // The discovery document redirects to http.
      routes = { [discovery]: () => redirect(`${plainBase}${discovery}`) };
      const first = await refusal(verify());
      assert.equal(first.code, "attest.insecure_issuer");
      assert.match(first.message, /redirects to http:\/\/127\.0\.0\.1/);

      // The key set redirects to http, through an https hop (307).
      routes = {
        [discovery]: goodDiscovery,
        [`/${ORG}/jwks`]: () => redirect(`${base}/moved`, 307),
        "/moved": () => redirect(`${plainBase}/jwks`, 301),
      };
      assert.equal((await refusal(verify())).code, "attest.insecure_issuer");
      assert.equal(plainRequests, 0, "no request ever went to the plain-http server");

      // https to https is followed, and the genuine keys then verify the token.
      routes = {
        [discovery]: goodDiscovery,
        [`/${ORG}/jwks`]: () => redirect(`${base}/moved`, 308),
        "/moved": () => Response.json(issuer.publicJwks(ORG)),
      };
      const claims = await verify();
      assert.equal(claims.machine_id, MACHINE);

      // A redirect loop ends, with a clear error.
      routes = { [discovery]: () => redirect(discovery) };
      const loop = await refusal(verify());
      assert.equal(loop.code, "attest.jwks_unreachable");
      assert.match(loop.message, /redirects more than 5 times/);
    });
  } finally {
    client.close();
    await tls.shutdown();
    await plain.shutdown();
  }
});
