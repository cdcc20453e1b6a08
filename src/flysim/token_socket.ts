/**
 * flysim's stand-in for a Machine's `/.fly/api` socket: `POST
 * /v1/tokens/oidc` with `{"aud": …}` answers the raw JWT as text/plain,
 * minted by flysim's issuer for this one machine (as Fly's init attaches the
 * machine's own macaroon, the caller cannot ask for another machine's token).
 *
 * `POST /v1/apps/APP/machines/ID/suspend` (any Host, e.g. `http://flaps`)
 * suspends the machine itself with no API token, as Fly's socket does; only
 * the machine's own app and id are accepted (403 for any other: the
 * socket's macaroon is scoped to this machine).
 *
 * @module
 */
import { readBoundedText } from "../attest/mod.ts";
import { z } from "zod";
import type { MintInput, OidcIssuer } from "./oidc.ts";

/** The machine the socket speaks for. */
export type SocketMachine = MintInput;

/** Options of {@link serveTokenSocket}. */
export interface TokenSocketOptions {
  /** Where to create the socket (any stale socket there is replaced). */
  path: string;
  machine: SocketMachine;
  issuer: Pick<OidcIssuer, "mint">;
  /** Replaces genuine minting (forgery tests). */
  mint?: (aud: string) => Promise<string>;
  /** Suspends this machine (the Machines API's suspend); absent: the endpoint answers 503. */
  suspend?: () => Promise<{ status: number; body: unknown }>;
}

/** A serving token socket. */
export interface TokenSocket {
  path: string;
  /** Token requests answered with 200 so far. */
  readonly requests: number;
  close(): Promise<void>;
}

const MAX_BODY_BYTES = 64 * 1024;

// Fly's CreateOIDCTokenRequest: both fields optional.
const TokenRequest = z.object({
  aud: z.string().min(1).max(4096).optional(),
  aws_principal_tags: z.boolean().optional(),
});

const SUSPEND_PATH = /^\/v1\/apps\/([^/]+)\/machines\/([^/]+)\/suspend$/;

const jsonReply = (body: unknown, status: number) =>
  new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json; charset=utf-8" },
  });

const text = (body: string, status: number) =>
  new Response(body + "\n", { status, headers: { "content-type": "text/plain; charset=utf-8" } });

/** Serves the token endpoint on a unix socket, mode 0600. */
export async function serveTokenSocket(opts: TokenSocketOptions): Promise<TokenSocket> {
  const stale = await Deno.lstat(opts.path).catch(() => undefined);
  if (stale?.isSocket) await Deno.remove(opts.path);
  let requests = 0;
  let resolveListening!: () => void;
  const listening = new Promise<void>((r) => (resolveListening = r));
  const server = Deno.serve(
    { path: opts.path, transport: "unix", onListen: () => resolveListening() },
    async (req) => {
      const path = new URL(req.url).pathname;
      const suspend = SUSPEND_PATH.exec(path);
      if (suspend) {
        if (req.method !== "POST") return jsonReply({ error: "method not allowed" }, 405);
        await req.body?.cancel();
        let app: string, id: string;
        try {
          [app, id] = [decodeURIComponent(suspend[1]), decodeURIComponent(suspend[2])];
        } catch {
          return jsonReply({ error: "bad path" }, 400);
        }
        if (app !== opts.machine.app || id !== opts.machine.machine_id) {
          return jsonReply({
            error: "unauthorized: this machine's socket may only suspend the machine itself",
          }, 403);
        }
        if (!opts.suspend) {
          return jsonReply({ error: "no Machines API runs this machine; it cannot suspend" }, 503);
        }
        const r = await opts.suspend();
        return jsonReply(r.body, r.status);
      }
      if (path !== "/v1/tokens/oidc") return text("not found", 404);
      if (req.method !== "POST") return text("method not allowed", 405);
      const body = await readBoundedText(req.body, MAX_BODY_BYTES);
      if (body === undefined) return text("request body too large", 400);
      let json: unknown;
      try {
        json = body.trim() === "" ? {} : JSON.parse(body);
      } catch {
        return text("invalid JSON body", 400);
      }
      const parsed = TokenRequest.safeParse(json);
      if (!parsed.success) {
        return text(`invalid request: ${parsed.error.issues[0]?.message ?? "bad body"}`, 400);
      }
      const aud = parsed.data.aud ?? `https://fly.io/${opts.machine.org}`;
      let token: string;
      try {
        token = opts.mint ? await opts.mint(aud) : await opts.issuer.mint({ ...opts.machine, aud });
      } catch (err) {
        return text(`cannot mint: ${err instanceof Error ? err.message : String(err)}`, 500);
      }
      requests++;
      return new Response(token, { headers: { "content-type": "text/plain; charset=utf-8" } });
    },
  );
  await listening;
  // Only the machine's own processes (same uid) may ask for its tokens.
  await Deno.chmod(opts.path, 0o600);
  return {
    path: opts.path,
    get requests() {
      return requests;
    },
    close: () => server.shutdown(),
  };
}
