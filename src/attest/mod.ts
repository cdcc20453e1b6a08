/**
 * Attestation (DESIGN §4): the Fly OIDC token source init uses, and the
 * verifier the client runs before it trusts a server's identity.
 *
 * @module
 */
export { FLY_CLAIM_NAMES, FlyClaims } from "./claims.ts";
export {
  createFlyTokenSource,
  type FlyTokenSource,
  type FlyTokenSourceOptions,
} from "./token_source.ts";
export {
  ALLOWED_ALGORITHMS,
  type AttestationExpectation,
  createJwksCache,
  issuerFor,
  type JwksCache,
  type JwksCacheOptions,
  verifyAttestationToken,
} from "./verify.ts";
export { readBoundedText } from "./bounded.ts";
