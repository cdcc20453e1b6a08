/**
 * The client's check of an attestation token (DESIGN §4): a Fly OIDC token
 * proves that the QUIC server holding identity `I` is a machine of
 * `org`/`app` (and `machine_id`), because its `aud` is `I`'s binding and
 * only Fly can sign for `https://oidc.fly.io/<org>`.
 *
 * The keys come from the issuer named by configuration, never by the token:
 * `<issuer>/.well-known/openid-configuration` → `jwks_uri`, cached per
 * issuer, refetched once when a token names a `kid` the cache lacks (key
 * rotation). Each failed check throws a {@link VaultError} whose code names
 * the check.
 *
 * @module
 */
import { readBoundedText } from "./bounded.ts";
import {
  createLocalJWKSet,
  decodeProtectedHeader,
  errors,
  type JSONWebKeySet,
  type JWSHeaderParameters,
  jwtVerify,
  type ProtectedHeaderParameters,
} from "jose";
import { z } from "zod";
import { VaultError } from "../errors/mod.ts";
import { FlyClaims } from "./claims.ts";

/** Asymmetric JWS algorithms only: never `none`, never HMAC (whose "key" could be public). */
export const ALLOWED_ALGORITHMS: readonly string[] = [
  "RS256",
  "RS384",
  "RS512",
  "PS256",
  "PS384",
  "PS512",
  "ES256",
  "ES384",
  "EdDSA",
  "Ed25519",
];

/** What the token must say. */
export interface AttestationExpectation {
  /** Fly's OIDC base, e.g. `https://oidc.fly.io`; the issuer is `<issuerBase>/<org>`. */
  issuerBase: string;
  /** Org slug. */
  org: string;
  /** App name the machine must belong to. */
  app: string;
  /** When set, the token must be for exactly this machine. */
  machineId?: string;
  /** The binding of the identity the server presented (`fly-vault:v1:…`). */
  audience: string;
  /** Permit a non-https issuer (flysim on loopback). */
  allowInsecureIssuer?: boolean;
  /** Tolerance for `exp`/`nbf`/`iat`, in seconds (default 60). */
  clockSkewSeconds?: number;
  now?: Date;
}

/** Options of {@link createJwksCache}. */
export interface JwksCacheOptions {
  /** How long discovery and keys are trusted before being fetched again (default 1 h). */
  maxAgeSeconds?: number;
  /** Milliseconds allowed per HTTP request, redirects included (default 5 s). */
  timeoutMs?: number;
  /** The HTTP client to fetch with (tests pass one trusting their own CA). */
  client?: Deno.HttpClient;
}

/** Discovery documents and key sets, per issuer. Share one per process. */
export interface JwksCache {
  /** Forgets everything (the next verification fetches again). */
  clear(): void;
  /** @internal keys for `issuer`; `refresh` refetches the JWKS (not the discovery). */
  keys(issuer: string, insecure: boolean, refresh: boolean): Promise<IssuerKeys>;
}

interface IssuerKeys {
  jwksUri: string;
  algorithms?: string[];
  resolve: ReturnType<typeof createLocalJWKSet>;
  fetchedAt: number;
}

const MAX_TOKEN_CHARS = 16 * 1024;
const MAX_DOC_BYTES = 256 * 1024;
/** Redirects followed per fetch, as browsers bound them (Fly's issuer uses none). */
const MAX_REDIRECTS = 5;
/** JWK members that only a private (or symmetric) key has. */
const PRIVATE_MEMBERS = ["d", "p", "q", "dp", "dq", "qi", "oth", "k", "priv"];
const DO_NOT_PROCEED = "this endpoint may not be the machine you think; do not proceed";

const Discovery = z.object({
  issuer: z.string().min(1).max(2048),
  jwks_uri: z.string().url().max(2048),
  id_token_signing_alg_values_supported: z.array(z.string().max(64)).max(64).optional(),
});

const Jwks = z.object({
  keys: z.array(
    z.looseObject({
      kty: z.string().max(16),
      kid: z.string().max(1024).optional(),
      use: z.string().max(16).optional(),
      alg: z.string().max(64).optional(),
    }),
  ).max(100),
});

/** Creates an empty cache for {@link verifyAttestationToken}. */
export function createJwksCache(
  { maxAgeSeconds = 3600, timeoutMs = 5000, client }: JwksCacheOptions = {},
): JwksCache {
  const http: FetchOptions = { timeoutMs, client };
  const discoveries = new Map<string, Promise<{ jwksUri: string; algorithms?: string[] }>>();
  const keySets = new Map<string, Promise<IssuerKeys>>();

  function discover(issuer: string, insecure: boolean) {
    let p = discoveries.get(issuer);
    if (!p) {
      p = fetchDiscovery(issuer, insecure, http);
      discoveries.set(issuer, p);
      p.catch(() => discoveries.delete(issuer));
    }
    return p;
  }

  async function load(issuer: string, insecure: boolean): Promise<IssuerKeys> {
    const { jwksUri, algorithms } = await discover(issuer, insecure);
    const jwks = await fetchJwks(jwksUri, insecure, http);
    let resolve: IssuerKeys["resolve"];
    try {
      resolve = createLocalJWKSet(jwks);
    } catch (err) {
      throw new VaultError(
        "attest.jwks_invalid",
        `${jwksUri} is not a usable JSON Web Key Set (${(err as Error).message})`,
        "the issuer's key set is broken; try again later, or check the issuer URL",
        { cause: err },
      );
    }
    return { jwksUri, algorithms, resolve, fetchedAt: Date.now() };
  }

  return {
    clear() {
      discoveries.clear();
      keySets.clear();
    },
    async keys(issuer, insecure, refresh) {
      const p = keySets.get(issuer);
      if (p) {
        const current = await p.catch(() => undefined);
        const latest = keySets.get(issuer);
        // Someone started a newer fetch while we waited (a concurrent refresh): join it.
        if (latest && latest !== p) return latest;
        const fresh = current !== undefined &&
          Date.now() - current.fetchedAt < maxAgeSeconds * 1000;
        if (fresh && !refresh) return current;
        // Failed or stale: rediscover too (the jwks_uri may have moved).
        if (!fresh) discoveries.delete(issuer);
      }
      const next = load(issuer, insecure);
      keySets.set(issuer, next);
      next.catch(() => {
        if (keySets.get(issuer) === next) keySets.delete(issuer);
      });
      return next;
    },
  };
}

/**
 * Verifies a Fly OIDC attestation token and returns its claims. Checks, in
 * order: shape, algorithm, signature against the org's JWKS, `exp`/`nbf`/`iat`,
 * claim set, `iss`, `aud`, `app_name`, `machine_id` (when expected).
 */
export async function verifyAttestationToken(
  token: string,
  expected: AttestationExpectation,
  cache: JwksCache = createJwksCache(),
): Promise<FlyClaims> {
  const insecure = expected.allowInsecureIssuer ?? false;
  const issuer = issuerFor(expected.issuerBase, expected.org, insecure);
  const skew = expected.clockSkewSeconds ?? 60;
  const now = expected.now ?? new Date();

  if (
    typeof token !== "string" || token.length > MAX_TOKEN_CHARS || token.split(".").length !== 3
  ) {
    throw new VaultError(
      "attest.malformed",
      "the attestation token is not a compact JWS (three dot-separated parts, at most 16 KiB)",
      DO_NOT_PROCEED,
    );
  }
  let header: ProtectedHeaderParameters;
  try {
    header = decodeProtectedHeader(token);
  } catch (err) {
    throw new VaultError(
      "attest.malformed",
      "the attestation token's header is not valid base64url JSON",
      DO_NOT_PROCEED,
      { cause: err },
    );
  }
  const alg = typeof header.alg === "string" ? header.alg : String(header.alg);
  if (!ALLOWED_ALGORITHMS.includes(alg)) {
    throw new VaultError(
      "attest.bad_algorithm",
      `the attestation token uses alg ${
        JSON.stringify(alg)
      }; only asymmetric signatures are accepted (${ALLOWED_ALGORITHMS.join(", ")})`,
      `an unsigned or HMAC token proves nothing: ${DO_NOT_PROCEED}`,
    );
  }

  let keys = await cache.keys(issuer, insecure, false);
  if (keys.algorithms && !keys.algorithms.includes(alg)) {
    throw new VaultError(
      "attest.bad_algorithm",
      `the attestation token uses alg ${alg}; ${issuer} signs with ${keys.algorithms.join(", ")}`,
      DO_NOT_PROCEED,
    );
  }
  let refreshed = false;
  const resolveKey = async (h: JWSHeaderParameters, t: Parameters<typeof keys.resolve>[1]) => {
    for (;;) {
      try {
        return await keys.resolve(h, t);
      } catch (err) {
        if (!(err instanceof errors.JWKSNoMatchingKey) || refreshed) throw err;
        // A kid we have not seen may be a rotated key: fetch the set once more.
        refreshed = true;
        keys = await cache.keys(issuer, insecure, true);
      }
    }
  };

  let payload: Record<string, unknown>;
  try {
    ({ payload } = await jwtVerify(token, resolveKey, {
      algorithms: [...ALLOWED_ALGORITHMS],
      currentDate: now,
      clockTolerance: skew,
    }));
  } catch (err) {
    throw mapJoseError(err, { issuer, header, now, jwksUri: keys.jwksUri });
  }

  const nowSec = Math.floor(now.getTime() / 1000);
  if (typeof payload.iat === "number" && payload.iat > nowSec + skew) {
    throw new VaultError(
      "attest.not_yet_valid",
      `the attestation token was issued in the future (iat ${isoOf(payload.iat)}, now ${
        isoOf(nowSec)
      })`,
      `check this computer's clock; otherwise ${DO_NOT_PROCEED}`,
    );
  }

  const parsed = FlyClaims.safeParse(payload);
  if (!parsed.success) {
    const missing = parsed.error.issues.map((i) => String(i.path[0] ?? "?"));
    throw new VaultError(
      "attest.missing_claims",
      `the attestation token lacks valid Fly claims: ${[...new Set(missing)].join(", ")}`,
      `a genuine Fly Machine token has all of them: ${DO_NOT_PROCEED}`,
    );
  }
  const claims = parsed.data;
  if (claims.iss !== issuer) {
    throw new VaultError(
      "attest.wrong_issuer",
      `the attestation token was issued by ${JSON.stringify(claims.iss)}, expected ${
        JSON.stringify(issuer)
      }`,
      `the token is for another org or issuer: ${DO_NOT_PROCEED}`,
    );
  }
  if (claims.aud !== expected.audience) {
    throw new VaultError(
      "attest.wrong_audience",
      `the attestation token's aud is ${JSON.stringify(claims.aud)}, expected ${
        JSON.stringify(expected.audience)
      } (the binding of the identity this server presented)`,
      `the token was issued for another key: a relayed or replayed token; ${DO_NOT_PROCEED}`,
    );
  }
  if (claims.app_name !== expected.app) {
    throw new VaultError(
      "attest.wrong_app",
      `the attestation token is for app ${JSON.stringify(claims.app_name)}, expected ${
        JSON.stringify(expected.app)
      }`,
      `the address reaches a machine of another app: ${DO_NOT_PROCEED}`,
    );
  }
  if (expected.machineId !== undefined && claims.machine_id !== expected.machineId) {
    throw new VaultError(
      "attest.wrong_machine",
      `the attestation token is for machine ${JSON.stringify(claims.machine_id)}, expected ${
        JSON.stringify(expected.machineId)
      }`,
      `the address reaches another machine of the app: ${DO_NOT_PROCEED}`,
    );
  }
  return claims;
}

/** `<issuerBase>/<org>`, refusing anything but https unless simulating. */
export function issuerFor(issuerBase: string, org: string, allowInsecure = false): string {
  let url: URL;
  try {
    url = new URL(issuerBase);
  } catch {
    throw new VaultError(
      "attest.insecure_issuer",
      `the OIDC issuer base ${JSON.stringify(issuerBase)} is not a URL`,
      "set it to https://oidc.fly.io (the default)",
    );
  }
  const local = url.protocol === "http:" && allowInsecure;
  if (url.protocol !== "https:" && !local) {
    throw new VaultError(
      "attest.insecure_issuer",
      `the OIDC issuer base ${issuerBase} is not https`,
      "a plain-http issuer could be impersonated; only a vault marked as a local simulation may use one",
    );
  }
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(org) || org.includes("..")) {
    throw new VaultError(
      "attest.wrong_issuer",
      `the org ${JSON.stringify(org)} is not a valid Fly org slug`,
      "set org to the slug shown in the Fly dashboard's URL",
    );
  }
  return `${issuerBase.replace(/\/+$/, "")}/${org}`;
}

/** @internal A jose error as the VaultError naming the check it failed; anything else as is. */
export function mapJoseError(
  err: unknown,
  ctx: { issuer: string; header: ProtectedHeaderParameters; now: Date; jwksUri: string },
): unknown {
  if (err instanceof VaultError) return err;
  if (err instanceof errors.JWKSNoMatchingKey) {
    return new VaultError(
      "attest.unknown_kid",
      `the attestation token is signed with key ${
        JSON.stringify(ctx.header.kid ?? "(no kid)")
      } (${ctx.header.alg}), which ${ctx.jwksUri} does not publish`,
      `the key is not ${ctx.issuer}'s: ${DO_NOT_PROCEED}`,
    );
  }
  if (err instanceof errors.JWKSMultipleMatchingKeys) {
    return new VaultError(
      "attest.unknown_kid",
      `several keys at ${ctx.jwksUri} match kid ${JSON.stringify(ctx.header.kid ?? "(none)")}`,
      "the issuer's key set is ambiguous; try again later",
    );
  }
  if (err instanceof errors.JWSSignatureVerificationFailed) {
    return new VaultError(
      "attest.bad_signature",
      `the attestation token's signature does not verify with ${ctx.issuer}'s key ${
        JSON.stringify(ctx.header.kid ?? "(no kid)")
      }`,
      `the token was not signed by Fly: ${DO_NOT_PROCEED}`,
    );
  }
  if (err instanceof errors.JOSEAlgNotAllowed) {
    return new VaultError(
      "attest.bad_algorithm",
      `the attestation token uses alg ${JSON.stringify(ctx.header.alg)}`,
      DO_NOT_PROCEED,
    );
  }
  if (err instanceof errors.JWTExpired) {
    const exp = (err.payload as { exp?: unknown }).exp;
    return new VaultError(
      "attest.expired",
      `the attestation token expired at ${isoOf(exp)} (now ${ctx.now.toISOString()})`,
      `check this computer's clock; a stale token may be replayed: ${DO_NOT_PROCEED}`,
    );
  }
  if (err instanceof errors.JWTClaimValidationFailed) {
    if (err.claim === "nbf" && err.reason === "check_failed") {
      const nbf = (err.payload as { nbf?: unknown }).nbf;
      return new VaultError(
        "attest.not_yet_valid",
        `the attestation token is not valid before ${isoOf(nbf)} (now ${ctx.now.toISOString()})`,
        `check this computer's clock; otherwise ${DO_NOT_PROCEED}`,
      );
    }
    return new VaultError(
      "attest.malformed",
      `the attestation token's ${err.claim} claim is invalid (${err.message})`,
      DO_NOT_PROCEED,
    );
  }
  if (err instanceof errors.JWKSInvalid || err instanceof errors.JWKInvalid) {
    // Raised while importing the issuer's keys (a private key among them, a broken key).
    return new VaultError(
      "attest.jwks_invalid",
      `${ctx.jwksUri} holds a key that cannot verify tokens (${err.message})`,
      `the issuer's key set is broken or not Fly's: ${DO_NOT_PROCEED}`,
      { cause: err },
    );
  }
  if (err instanceof errors.JWKSTimeout) {
    return new VaultError(
      "attest.jwks_unreachable",
      `${ctx.jwksUri} did not answer in time`,
      "check the network and try again",
      { cause: err },
    );
  }
  if (err instanceof errors.JOSEError) {
    // JWSInvalid, JWTInvalid, JOSENotSupported, JWE*: and any class a newer jose adds.
    return new VaultError(
      "attest.malformed",
      `the attestation token is malformed: ${err.message}`,
      DO_NOT_PROCEED,
      { cause: err },
    );
  }
  if (err instanceof TypeError) {
    // jose refuses keys too weak for the algorithm (e.g. RSA < 2048 bits) with a TypeError.
    return new VaultError(
      "attest.bad_signature",
      `the attestation token cannot be verified: ${err.message}`,
      DO_NOT_PROCEED,
      { cause: err },
    );
  }
  return err;
}

function isoOf(seconds: unknown): string {
  return typeof seconds === "number" && Number.isFinite(seconds) && Math.abs(seconds) < 1e11
    ? new Date(seconds * 1000).toISOString()
    : JSON.stringify(seconds);
}

interface FetchOptions {
  timeoutMs: number;
  client?: Deno.HttpClient;
}

async function fetchDiscovery(issuer: string, insecure: boolean, http: FetchOptions) {
  const url = `${issuer}/.well-known/openid-configuration`;
  const raw = await fetchJson(url, insecure, http);
  const doc = Discovery.safeParse(raw);
  if (!doc.success) {
    throw new VaultError(
      "attest.jwks_unreachable",
      `${url} is not a valid OpenID discovery document (${
        doc.error.issues.map((i) => i.path.join(".") || "body").join(", ")
      })`,
      "the issuer URL may be wrong; Fly's is https://oidc.fly.io",
    );
  }
  if (doc.data.issuer.replace(/\/+$/, "") !== issuer) {
    throw new VaultError(
      "attest.wrong_issuer",
      `${url} names issuer ${JSON.stringify(doc.data.issuer)}, expected ${JSON.stringify(issuer)}`,
      "the issuer URL or org slug in the configuration may be wrong",
    );
  }
  const jwksUri = doc.data.jwks_uri;
  requireSecureUrl(jwksUri, insecure, "jwks_uri");
  const algorithms = doc.data.id_token_signing_alg_values_supported?.filter((a) =>
    ALLOWED_ALGORITHMS.includes(a)
  );
  return { jwksUri, algorithms: algorithms?.length ? algorithms : undefined };
}

async function fetchJwks(url: string, insecure: boolean, http: FetchOptions) {
  const raw = await fetchJson(url, insecure, http);
  const doc = Jwks.safeParse(raw);
  if (!doc.success) {
    throw new VaultError(
      "attest.jwks_unreachable",
      `${url} is not a valid JSON Web Key Set`,
      "the issuer's key set is broken; try again later",
    );
  }
  // A published private key lets anyone sign: the whole set is worthless, not just that key.
  const leaked = doc.data.keys.find((k) => PRIVATE_MEMBERS.some((m) => m in k && k.kty !== "oct"));
  if (leaked) {
    throw new VaultError(
      "attest.jwks_invalid",
      `${url} publishes a private key (kid ${JSON.stringify(leaked.kid ?? "(none)")})`,
      `anyone holding it can sign tokens, so no token from this issuer proves anything: ${DO_NOT_PROCEED}`,
    );
  }
  // Symmetric and encryption keys never verify a Fly token; drop them outright.
  const keys = doc.data.keys.filter((k) =>
    k.kty !== "oct" && (k.use === undefined || k.use === "sig")
  );
  return { keys } as JSONWebKeySet;
}

function requireSecureUrl(url: string, insecure: boolean, what: string) {
  const protocol = new URL(url).protocol;
  if (protocol !== "https:" && !(insecure && protocol === "http:")) {
    throw new VaultError(
      "attest.insecure_issuer",
      `the issuer's ${what} ${url} is not https`,
      "keys fetched over plain http could be substituted; only a local simulation may use http",
    );
  }
}

async function fetchJson(url: string, insecure: boolean, http: FetchOptions): Promise<unknown> {
  requireSecureUrl(url, insecure, "URL");
  const signal = AbortSignal.timeout(http.timeoutMs);
  let res: Response;
  let current = url;
  // Redirects are followed here, not by fetch: each target's scheme is checked before any
  // request goes to it, so an https issuer cannot make us send even one plain-http request.
  for (let hops = 0;; hops++) {
    try {
      res = await fetch(current, {
        headers: { accept: "application/json" },
        signal,
        redirect: "manual",
        ...(http.client ? { client: http.client } : {}),
      });
    } catch (err) {
      const why = err instanceof Error && err.name === "TimeoutError"
        ? `no reply within ${http.timeoutMs} ms`
        : innermost(err);
      throw new VaultError(
        "attest.jwks_unreachable",
        `cannot fetch ${current}: ${why}`,
        "the issuer's keys are needed to check the machine; check the network and the issuer URL",
        { cause: err },
      );
    }
    if (![301, 302, 303, 307, 308].includes(res.status)) break;
    await res.body?.cancel();
    const location = res.headers.get("location");
    let next: URL | undefined;
    try {
      next = location ? new URL(location, current) : undefined;
    } catch { /* reported below */ }
    if (!next || hops >= MAX_REDIRECTS) {
      throw new VaultError(
        "attest.jwks_unreachable",
        `${url} ${
          next ? `redirects more than ${MAX_REDIRECTS} times` : "redirects without a valid Location"
        }`,
        "the issuer URL may be wrong; Fly's is https://oidc.fly.io",
      );
    }
    if (new URL(current).protocol === "https:" && next.protocol !== "https:") {
      throw new VaultError(
        "attest.insecure_issuer",
        `${current} redirects to ${next.href}, which is not https`,
        "keys fetched over plain http could be substituted; the request was not sent",
      );
    }
    requireSecureUrl(next.href, insecure, "redirect");
    current = next.href;
  }
  if (res.status !== 200) {
    await res.body?.cancel();
    throw new VaultError(
      "attest.jwks_unreachable",
      `${current} answered ${res.status}`,
      "the issuer URL or org slug may be wrong; Fly's issuer is https://oidc.fly.io/<org>",
    );
  }
  let text: string | undefined;
  try {
    text = await readBoundedText(res.body, MAX_DOC_BYTES);
  } catch (err) {
    throw new VaultError(
      "attest.jwks_unreachable",
      `cannot read ${url}: ${innermost(err)}`,
      "try again later",
      { cause: err },
    );
  }
  if (text === undefined) {
    throw new VaultError(
      "attest.jwks_unreachable",
      `${url} is larger than ${MAX_DOC_BYTES} bytes`,
      "the issuer URL may be wrong",
    );
  }
  try {
    return JSON.parse(text);
  } catch {
    throw new VaultError(
      "attest.jwks_unreachable",
      `${url} did not return JSON`,
      "the issuer URL may be wrong; Fly's is https://oidc.fly.io",
    );
  }
}

function innermost(err: unknown): string {
  let e: unknown = err;
  while (e instanceof Error && e.cause instanceof Error) e = e.cause;
  return e instanceof Error ? e.message : String(e);
}
