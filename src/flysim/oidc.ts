/**
 * flysim's stand-in for `https://oidc.fly.io`: an OIDC issuer per org on
 * loopback, with its own RSA key, serving the discovery document and JWKS,
 * and minting tokens with exactly the claims and `iss` shape of Fly's
 * Machine tokens (fly-platform-notes §1.3). A plain function, so a bin can
 * run it in its own process.
 *
 * @module
 */
import {
  exportJWK,
  exportSPKI,
  generateKeyPair,
  type JSONWebKeySet,
  type JWK,
  type JWTPayload,
  SignJWT,
} from "jose";
import type { FlyClaims } from "../attest/mod.ts";

/** What {@link OidcIssuer.mint} needs: the machine, plus any claim to override. */
export type MintInput = Partial<FlyClaims> & {
  org: string;
  app: string;
  machine_id: string;
};

/** A running issuer. */
export interface OidcIssuer {
  /** `http://127.0.0.1:PORT` */
  baseUrl: string;
  /** `<baseUrl>/<org>`, the `iss` of the org's tokens. */
  issuerFor(org: string): string;
  /** A genuine token: Fly's claim set, signed with the current key. */
  mint(claims: MintInput): Promise<string>;
  /** Signs an arbitrary payload with the current key (forgery tests). */
  sign(payload: JWTPayload, header?: Record<string, unknown>): Promise<string>;
  /** What `<org>/.well-known/jwks` serves. */
  publicJwks(org: string): JSONWebKeySet;
  /** The current public key as SPKI PEM (the classic HS256 forgery uses it as the secret). */
  publicKeyPem(): Promise<string>;
  /** The current key's id. */
  readonly kid: string;
  /** Replaces the signing key; the old one stays published unless `dropOld`. */
  rotateKey(opts?: { dropOld?: boolean }): Promise<string>;
  /** Requests served so far, by document. */
  readonly requests: { discovery: number; jwks: number };
  close(): Promise<void>;
}

interface SigningKey {
  kid: string;
  privateKey: CryptoKey;
  publicKey: CryptoKey;
  jwk: JWK;
}

const ORG_SLUG = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;
const TOKEN_LIFETIME_SECONDS = 600;

async function newKey(): Promise<SigningKey> {
  const { privateKey, publicKey } = await generateKeyPair("RS256", { modulusLength: 2048 });
  const kid = `flysim-${crypto.randomUUID().slice(0, 8)}`;
  const jwk = { ...(await exportJWK(publicKey)), kid, alg: "RS256", use: "sig" };
  return { kid, privateKey, publicKey, jwk };
}

/** Starts the issuer on loopback. */
export async function startOidcIssuer(
  { hostname = "127.0.0.1", port = 0 }: { hostname?: string; port?: number } = {},
): Promise<OidcIssuer> {
  let current = await newKey();
  let published: SigningKey[] = [current];
  const requests = { discovery: 0, jwks: 0 };

  let resolveListening!: (addr: Deno.NetAddr) => void;
  const listening = new Promise<Deno.NetAddr>((r) => (resolveListening = r));
  const server = Deno.serve({
    hostname,
    port,
    onListen: (addr) => resolveListening(addr as Deno.NetAddr),
  }, (req) => {
    const m = /^\/([^/]+)\/\.well-known\/(openid-configuration|jwks)$/.exec(
      new URL(req.url).pathname,
    );
    if (!m || !ORG_SLUG.test(m[1])) return new Response("not found\n", { status: 404 });
    if (req.method !== "GET" && req.method !== "HEAD") {
      return new Response("method not allowed\n", { status: 405, headers: { allow: "GET" } });
    }
    const org = m[1];
    if (m[2] === "jwks") {
      requests.jwks++;
      return Response.json(issuer.publicJwks(org));
    }
    requests.discovery++;
    const iss = issuer.issuerFor(org);
    return Response.json({
      issuer: iss,
      jwks_uri: `${iss}/.well-known/jwks`,
      response_types_supported: ["id_token"],
      subject_types_supported: ["public"],
      id_token_signing_alg_values_supported: ["RS256"],
      scopes_supported: ["openid"],
      claims_supported: [
        "app_id",
        "app_name",
        "aud",
        "exp",
        "iat",
        "image",
        "image_digest",
        "iss",
        "jti",
        "machine_id",
        "machine_name",
        "machine_version",
        "nbf",
        "org_id",
        "org_name",
        "region",
        "sub",
      ],
    });
  });
  const addr = await listening;
  const host = addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname;
  const baseUrl = `http://${host}:${addr.port}`;

  const sign = (payload: JWTPayload, header: Record<string, unknown> = {}) =>
    new SignJWT(payload)
      .setProtectedHeader({ alg: "RS256", typ: "JWT", kid: current.kid, ...header })
      .sign(current.privateKey);

  const issuer: OidcIssuer = {
    baseUrl,
    issuerFor: (org) => `${baseUrl}/${org}`,
    get kid() {
      return current.kid;
    },
    get requests() {
      return { ...requests };
    },
    mint(input) {
      const iat = input.iat ?? Math.floor(Date.now() / 1000);
      const machineName = input.machine_name ?? input.machine_id;
      const orgName = input.org_name ?? input.org;
      const appName = input.app_name ?? input.app;
      const claims: FlyClaims = {
        app_id: input.app_id ?? `app_${input.app}`,
        app_name: appName,
        aud: input.aud ?? `https://fly.io/${input.org}`,
        exp: input.exp ?? iat + TOKEN_LIFETIME_SECONDS,
        iat,
        image: input.image ?? `registry.fly.io/${input.app}:latest`,
        image_digest: input.image_digest ??
          "sha256:0000000000000000000000000000000000000000000000000000000000000000",
        iss: input.iss ?? issuer.issuerFor(input.org),
        jti: input.jti ?? crypto.randomUUID(),
        machine_id: input.machine_id,
        machine_name: machineName,
        machine_version: input.machine_version ?? "01JSIMULATED0000000000000",
        nbf: input.nbf ?? iat,
        org_id: input.org_id ?? `org_${input.org}`,
        org_name: orgName,
        region: input.region ?? "ord",
        sub: input.sub ?? `${orgName}:${appName}:${machineName}`,
      };
      return sign(claims);
    },
    sign,
    publicJwks: (_org) => ({ keys: published.map((k) => ({ ...k.jwk })) }),
    publicKeyPem: () => exportSPKI(current.publicKey),
    async rotateKey({ dropOld = false } = {}) {
      const next = await newKey();
      published = dropOld ? [next] : [...published, next];
      current = next;
      return next.kid;
    },
    close: () => server.shutdown(),
  };
  return issuer;
}
