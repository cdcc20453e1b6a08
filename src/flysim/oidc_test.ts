import assert from "node:assert/strict";
import { decodeJwt, decodeProtectedHeader } from "jose";
import { FLY_CLAIM_NAMES } from "../attest/mod.ts";
import { startOidcIssuer } from "./oidc.ts";

Deno.test("the issuer serves discovery and JWKS per org, and mints Fly's claim shape", async () => {
  const issuer = await startOidcIssuer();
  try {
    assert.match(issuer.baseUrl, /^http:\/\/127\.0\.0\.1:\d+$/);
    const iss = issuer.issuerFor("acme");
    const doc = await (await fetch(`${iss}/.well-known/openid-configuration`)).json();
    assert.equal(doc.issuer, iss);
    assert.equal(doc.jwks_uri, `${iss}/.well-known/jwks`);
    assert.deepEqual(doc.id_token_signing_alg_values_supported, ["RS256"]);
    const jwks = await (await fetch(doc.jwks_uri)).json();
    assert.deepEqual(jwks, issuer.publicJwks("acme"));
    assert.equal(jwks.keys.length, 1);
    const [key] = jwks.keys;
    assert.equal(key.kty, "RSA");
    assert.equal(key.kid, issuer.kid);
    assert.equal(key.d, undefined, "no private part");
    assert.deepEqual(issuer.requests, { discovery: 1, jwks: 1 });

    const token = await issuer.mint({
      org: "acme",
      app: "web",
      machine_id: "148e21ea7e46e8",
      machine_name: "example-machine",
      aud: "sts.amazonaws.com",
    });
    assert.deepEqual(decodeProtectedHeader(token), { alg: "RS256", typ: "JWT", kid: issuer.kid });
    const c = decodeJwt(token);
    assert.deepEqual(Object.keys(c).sort(), [...FLY_CLAIM_NAMES].sort());
    assert.equal(c.iss, iss);
    assert.equal(c.sub, "acme:web:example-machine");
    assert.equal(c.app_name, "web");
    assert.equal(c.aud, "sts.amazonaws.com");
    assert.equal(c.nbf, c.iat);
    assert.equal(c.exp! - c.iat!, 600);
    assert.match(
      String(c.jti),
      /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/,
    );
    assert.notEqual(
      decodeJwt(await issuer.mint({ org: "a", app: "b", machine_id: "c" })).jti,
      c.jti,
    );

    assert.equal((await fetch(`${issuer.baseUrl}/acme/other`)).status, 404);
    assert.equal((await fetch(`${issuer.baseUrl}/`)).status, 404);
    const post = await fetch(`${iss}/.well-known/jwks`, { method: "POST" });
    assert.equal(post.status, 405);
    await post.body?.cancel();
  } finally {
    await issuer.close();
  }
});

Deno.test("rotation publishes the new key, keeping the old one unless dropped", async () => {
  const issuer = await startOidcIssuer();
  try {
    const first = issuer.kid;
    const second = await issuer.rotateKey();
    assert.deepEqual(issuer.publicJwks("x").keys.map((k) => k.kid), [first, second]);
    const third = await issuer.rotateKey({ dropOld: true });
    assert.deepEqual(issuer.publicJwks("x").keys.map((k) => k.kid), [third]);
    assert.equal(
      decodeProtectedHeader(await issuer.mint({ org: "a", app: "b", machine_id: "c" })).kid,
      third,
    );
  } finally {
    await issuer.close();
  }
});
