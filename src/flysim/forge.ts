/**
 * Forged attestation tokens, one per check of the verifier (issue 2's
 * forgery matrix). Each entry builds a token for a given machine and
 * audience that a correct verifier must refuse with `expectCode`. Tests loop
 * over {@link forgeries}; end-to-end tests plug `make` into a token socket's
 * `mint` override.
 *
 * @module
 */
import { base64url, generateKeyPair, type JWTPayload, SignJWT } from "jose";
import type { MintInput, OidcIssuer } from "./oidc.ts";

/** What a forgery is built from. */
export interface ForgeContext {
  /** The genuine flysim issuer the verifier trusts. */
  issuer: OidcIssuer;
  /** The genuine machine (org, app, machine_id, …) the verifier expects. */
  identity: MintInput;
  /** The audience the verifier expects (the binding of the server's identity). */
  audience: string;
}

/** One row of the forgery matrix. */
export interface Forgery {
  name: string;
  /** The VaultError code a verifier must refuse it with. */
  expectCode: string;
  /** True when refusal depends on the verifier being configured with the machine id. */
  needsMachineId?: boolean;
  make(ctx: ForgeContext): Promise<string>;
}

const HOUR = 3600;
const nowSec = () => Math.floor(Date.now() / 1000);

let otherKey: Promise<CryptoKeyPair> | undefined;
/** An RSA key that is not the issuer's (generated once per process). */
function foreignKey(): Promise<CryptoKeyPair> {
  otherKey ??= generateKeyPair("RS256", { modulusLength: 2048 });
  return otherKey;
}

/** The genuine claim set for ctx, as the issuer would mint it. */
async function genuineClaims(ctx: ForgeContext): Promise<JWTPayload> {
  const token = await ctx.issuer.mint({ ...ctx.identity, aud: ctx.audience });
  return JSON.parse(new TextDecoder().decode(base64url.decode(token.split(".")[1])));
}

function encodeSegment(value: unknown): string {
  return base64url.encode(new TextEncoder().encode(JSON.stringify(value)));
}

/** A fresh 32-byte binding that is not ctx's (another identity's key hash). */
function otherBinding(): string {
  return `fly-vault:v1:${base64url.encode(crypto.getRandomValues(new Uint8Array(32)))}`;
}

/** Every forgery the verifier must refuse, and the code it must refuse it with. */
export const forgeries: Forgery[] = [
  {
    name: "bad signature (another RSA key, same kid)",
    expectCode: "attest.bad_signature",
    async make(ctx) {
      const { privateKey } = await foreignKey();
      return new SignJWT(await genuineClaims(ctx))
        .setProtectedHeader({ alg: "RS256", typ: "JWT", kid: ctx.issuer.kid })
        .sign(privateKey);
    },
  },
  {
    name: "unknown kid",
    expectCode: "attest.unknown_kid",
    async make(ctx) {
      const { privateKey } = await foreignKey();
      return new SignJWT(await genuineClaims(ctx))
        .setProtectedHeader({ alg: "RS256", typ: "JWT", kid: "forged-kid" })
        .sign(privateKey);
    },
  },
  {
    name: "alg none",
    expectCode: "attest.bad_algorithm",
    async make(ctx) {
      const header = { alg: "none", typ: "JWT", kid: ctx.issuer.kid };
      return `${encodeSegment(header)}.${encodeSegment(await genuineClaims(ctx))}.`;
    },
  },
  {
    name: "HS256 keyed with the JWKS public key",
    expectCode: "attest.bad_algorithm",
    async make(ctx) {
      const pem = await ctx.issuer.publicKeyPem();
      return new SignJWT(await genuineClaims(ctx))
        .setProtectedHeader({ alg: "HS256", typ: "JWT", kid: ctx.issuer.kid })
        .sign(new TextEncoder().encode(pem));
    },
  },
  {
    name: "wrong iss (another org)",
    expectCode: "attest.wrong_issuer",
    async make(ctx) {
      const claims = await genuineClaims(ctx);
      return ctx.issuer.sign({ ...claims, iss: ctx.issuer.issuerFor(`${ctx.identity.org}-other`) });
    },
  },
  {
    name: "wrong aud (another service's audience)",
    expectCode: "attest.wrong_audience",
    async make(ctx) {
      return ctx.issuer.sign({ ...(await genuineClaims(ctx)), aud: "sts.amazonaws.com" });
    },
  },
  {
    name: "aud bound to another identity",
    expectCode: "attest.wrong_audience",
    async make(ctx) {
      return ctx.issuer.sign({ ...(await genuineClaims(ctx)), aud: otherBinding() });
    },
  },
  {
    name: "wrong app_name",
    expectCode: "attest.wrong_app",
    make(ctx) {
      return ctx.issuer.mint({
        ...ctx.identity,
        aud: ctx.audience,
        app: `${ctx.identity.app}-other`,
        app_name: `${ctx.identity.app_name ?? ctx.identity.app}-other`,
      });
    },
  },
  {
    name: "wrong machine_id",
    expectCode: "attest.wrong_machine",
    needsMachineId: true,
    make(ctx) {
      return ctx.issuer.mint({
        ...ctx.identity,
        aud: ctx.audience,
        machine_id: `${ctx.identity.machine_id}0`,
      });
    },
  },
  {
    name: "expired",
    expectCode: "attest.expired",
    make(ctx) {
      const iat = nowSec() - 2 * HOUR;
      return ctx.issuer.mint({ ...ctx.identity, aud: ctx.audience, iat, nbf: iat, exp: iat + 600 });
    },
  },
  {
    name: "not yet valid",
    expectCode: "attest.not_yet_valid",
    make(ctx) {
      const iat = nowSec() + HOUR;
      return ctx.issuer.mint({ ...ctx.identity, aud: ctx.audience, iat, nbf: iat, exp: iat + 600 });
    },
  },
  {
    name: "missing claims (machine_id, image_digest)",
    expectCode: "attest.missing_claims",
    async make(ctx) {
      const { machine_id: _m, image_digest: _d, ...rest } = await genuineClaims(ctx);
      return ctx.issuer.sign(rest);
    },
  },
];
