/**
 * Where a Fly API token may be sent. The token goes in a bearer header, so a
 * plain-http API base is allowed only where no one else is on the path:
 * loopback (flysim, a local tunnel) and Fly's private network (6PN, which
 * WireGuard encrypts: `http://_api.internal:4280`, `fdaa::/16`).
 *
 * @module
 */
import { VaultError } from "../errors/mod.ts";

function isPrivatePathHost(hostname: string): boolean {
  const host = hostname.replace(/^\[|\]$/g, "").toLowerCase();
  if (host === "localhost" || host.endsWith(".localhost")) return true;
  if (/^127\.\d+\.\d+\.\d+$/.test(host)) return true;
  if (host === "::1" || host === "0:0:0:0:0:0:0:1") return true;
  if (host.endsWith(".internal")) return true;
  return /^fdaa:/.test(host);
}

/**
 * Returns `url` without trailing slashes when it may carry a token; throws
 * `fly.insecure_api_base` for plain http elsewhere and `fly.bad_api_base`
 * for what is not an http(s) URL. `flag` names the option in the message.
 */
export function checkApiBase(url: string, flag = "--api-base"): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new VaultError(
      "fly.bad_api_base",
      `${flag} ${JSON.stringify(url)} is not a URL`,
      "e.g. https://api.machines.dev (the default) or http://_api.internal:4280 inside Fly",
    );
  }
  if (parsed.protocol !== "https:" && parsed.protocol !== "http:") {
    throw new VaultError(
      "fly.bad_api_base",
      `${flag} ${JSON.stringify(url)} is not an http(s) URL`,
      "e.g. https://api.machines.dev (the default) or http://_api.internal:4280 inside Fly",
    );
  }
  if (parsed.protocol === "http:" && !isPrivatePathHost(parsed.hostname)) {
    throw new VaultError(
      "fly.insecure_api_base",
      `${flag} ${url} is plain http to ${parsed.hostname}: the API token would cross the ` +
        "network unencrypted",
      "use https://, or plain http only on loopback or Fly's private network " +
        "(http://_api.internal:4280)",
    );
  }
  return url.replace(/\/+$/, "");
}
