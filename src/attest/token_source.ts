/**
 * Where init gets its Fly OIDC tokens: the machine's API socket `/.fly/api`
 * (`POST http://localhost/v1/tokens/oidc`, body `{"aud": …}`, reply the raw
 * JWT as text/plain). Tokens are reused per audience until shortly before
 * `exp`, because Fly rate-limits the endpoint (about one request a second)
 * and a fresh token per connection would add nothing (DESIGN §4).
 *
 * @module
 */
import { readBoundedText } from "./bounded.ts";
import { decodeJwt } from "jose";
import { VaultError } from "../errors/mod.ts";

/** Gets a Fly OIDC token whose `aud` is the given audience. */
export interface FlyTokenSource {
  get(aud: string): Promise<string>;
  /** Releases the HTTP client (its pooled connection to the socket). */
  close(): void;
}

/** Options of {@link createFlyTokenSource}. */
export interface FlyTokenSourceOptions {
  /** Fly's API socket; flysim's when simulating. */
  socketPath?: string;
  /** A cached token is replaced once it has fewer seconds than this left. */
  refreshBeforeSeconds?: number;
  /** Milliseconds allowed for one request to the socket. */
  timeoutMs?: number;
  /** Clock in epoch milliseconds (tests inject one instead of sleeping). */
  now?: () => number;
}

/** The largest reply we accept: Fly's tokens are about 1 KiB. */
const MAX_TOKEN_BYTES = 16 * 1024;
/** Audiences remembered at once; init uses one per boot. */
const MAX_CACHED_AUDIENCES = 16;
// The signature part may be empty: init relays, the client verifies. Judging the token here would
// only hide from the client what the socket really said.
const JWT_SHAPE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;
const SOCKET_HINT =
  "is this running on a Fly Machine? set FLY_VAULT_TOKEN_SOCKET (or --token-socket) for flysim";

/**
 * Creates the token source init uses. Concurrent requests for the same
 * audience share one request to the socket.
 */
export function createFlyTokenSource(
  {
    socketPath = "/.fly/api",
    refreshBeforeSeconds = 60,
    timeoutMs = 10_000,
    now = Date.now,
  }: FlyTokenSourceOptions = {},
): FlyTokenSource {
  const cache = new Map<string, { token: string; exp: number }>();
  const inflight = new Map<string, Promise<string>>();
  let client: Deno.HttpClient | undefined;

  async function fetchToken(aud: string): Promise<string> {
    await checkSocket(socketPath);
    client ??= Deno.createHttpClient({ proxy: { transport: "unix", path: socketPath } });
    let res: Response;
    try {
      res = await fetch("http://localhost/v1/tokens/oidc", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ aud }),
        client,
        signal: AbortSignal.timeout(timeoutMs),
      });
    } catch (err) {
      const why = err instanceof Error && err.name === "TimeoutError"
        ? `no reply within ${timeoutMs} ms`
        : causeText(err);
      throw new VaultError(
        "attest.token_socket",
        `cannot request an OIDC token from ${socketPath}: ${why}`,
        SOCKET_HINT,
        { cause: err },
      );
    }
    const body = await readBoundedText(res.body, MAX_TOKEN_BYTES).catch((err) => {
      throw new VaultError(
        "attest.token_reply",
        `the token socket's reply could not be read: ${causeText(err)}`,
        "the Fly API socket misbehaved; retry, and check the machine's logs",
        { cause: err },
      );
    });
    if (res.status !== 200) {
      throw new VaultError(
        "attest.token_reply",
        `the token socket answered ${res.status}: ${snippet(body ?? "")}`,
        "Fly refused to issue an OIDC token for this machine; check the app's OIDC settings",
      );
    }
    const token = body?.trim() ?? "";
    if (body === undefined || !JWT_SHAPE.test(token)) {
      throw new VaultError(
        "attest.token_reply",
        body === undefined
          ? `the token socket's reply is larger than ${MAX_TOKEN_BYTES} bytes`
          : token === ""
          ? "the token socket's reply is empty"
          : "the token socket's reply is not a JWT (header.payload.signature, base64url)",
        "the Fly API socket misbehaved; retry, and check the machine's logs",
      );
    }
    let exp: unknown;
    try {
      exp = decodeJwt(token).exp;
    } catch (err) {
      throw new VaultError(
        "attest.token_reply",
        "the token socket's reply is not a decodable JWT",
        "the Fly API socket misbehaved; retry, and check the machine's logs",
        { cause: err },
      );
    }
    if (typeof exp !== "number" || !Number.isFinite(exp)) {
      throw new VaultError(
        "attest.token_reply",
        "the token from the socket has no numeric exp claim",
        "the Fly API socket misbehaved; retry, and check the machine's logs",
      );
    }
    if (cache.size >= MAX_CACHED_AUDIENCES && !cache.has(aud)) {
      cache.delete(cache.keys().next().value!);
    }
    cache.set(aud, { token, exp });
    return token;
  }

  return {
    get(aud: string): Promise<string> {
      const cached = cache.get(aud);
      if (cached && cached.exp - refreshBeforeSeconds > now() / 1000) {
        return Promise.resolve(cached.token);
      }
      let pending = inflight.get(aud);
      if (!pending) {
        pending = fetchToken(aud).finally(() => inflight.delete(aud));
        inflight.set(aud, pending);
      }
      return pending;
    },
    close() {
      client?.close();
      client = undefined;
    },
  };
}

/** Turns "no such file" and "not a socket" into errors that say so. */
async function checkSocket(path: string): Promise<void> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(path);
  } catch (err) {
    throw new VaultError(
      "attest.token_socket",
      err instanceof Deno.errors.NotFound
        ? `no token socket at ${path}`
        : `cannot reach the token socket ${path}: ${causeText(err)}`,
      SOCKET_HINT,
      { cause: err },
    );
  }
  if (!info.isSocket) {
    throw new VaultError(
      "attest.token_socket",
      `${path} exists but is not a unix socket`,
      SOCKET_HINT,
    );
  }
}

/** The innermost message of an error (fetch wraps the OS error in `cause`). */
function causeText(err: unknown): string {
  let e: unknown = err;
  while (e instanceof Error && e.cause instanceof Error) e = e.cause;
  const msg = e instanceof Error ? e.message : String(e);
  // "error sending request for url (…): client error (Connect): Connection refused (os error 111)"
  const tail = msg.split(": ").pop() ?? msg;
  return tail.replace(/\s*\(os error \d+\)$/, "").toLowerCase();
}

function snippet(s: string): string {
  const one = s.replace(/\s+/g, " ").trim();
  return one.length > 200 ? one.slice(0, 200) + "…" : one || "(empty body)";
}
