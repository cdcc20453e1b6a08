/**
 * The claim set of a Fly Machine OIDC token (fly-platform-notes §1.3).
 *
 * @module
 */
import { z } from "zod";

const text = z.string().min(1).max(1024);
const numericDate = z.number().int().nonnegative();

/**
 * Every claim Fly puts in a Machine's OIDC token. All are required: a token
 * missing one is not a Fly token we understand, and is refused. Unknown
 * extra claims are dropped (Fly may add some).
 */
export const FlyClaims = z.object({
  app_id: text,
  app_name: text,
  aud: text,
  exp: numericDate,
  iat: numericDate,
  image: text,
  image_digest: text,
  iss: text,
  jti: text,
  machine_id: text,
  machine_name: text,
  machine_version: text,
  nbf: numericDate,
  org_id: text,
  org_name: text,
  region: text,
  sub: text,
});

/** The validated claims of a Fly Machine OIDC token. */
export type FlyClaims = z.infer<typeof FlyClaims>;

/** Names of every claim in {@link FlyClaims}, in Fly's (alphabetical) order. */
export const FLY_CLAIM_NAMES: readonly (keyof FlyClaims)[] = Object.keys(
  FlyClaims.shape,
) as (keyof FlyClaims)[];
