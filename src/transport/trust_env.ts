/**
 * What this process's TLS root store holds beyond Mozilla's roots.
 *
 * Deno's `caCerts` for QUIC is ADDED to the process's root store; it does not
 * replace it. That store is fixed at start-up from `DENO_CERT`,
 * `DENO_TLS_CA_STORE` (`system` honours `SSL_CERT_FILE`), `NODE_EXTRA_CA_CERTS`,
 * the `--cert` flag and `--unsafely-ignore-certificate-errors` (which turns
 * verification off). Any of them lets a CA we never chose vouch for a pinned
 * connection, so a man in the middle holding a corporate CA's key would pass
 * the pin and receive the access token. Mozilla's default roots are harmless
 * here: no public CA can issue for a `.internal` name, the only names we dial.
 *
 * The client program re-executes itself without these (src/client/trust.ts);
 * {@link assertCleanTrustStore} makes every dial refuse to run otherwise.
 *
 * @module
 */
import { VaultError } from "../errors/mod.ts";

/** Environment variables that add roots (or, for the CA store, may). */
export const TRUST_ENV_VARS = ["DENO_CERT", "DENO_TLS_CA_STORE", "NODE_EXTRA_CA_CERTS"] as const;

/** Deno flags (before the script) that add roots or switch verification off. */
export const TRUST_FLAGS = ["--cert", "--unsafely-ignore-certificate-errors"] as const;

/** A Deno command line split around the script: `[deno, …flags, script, …args]`. */
export interface DenoArgv {
  exe: string;
  /** Deno's own flags and subcommand (`run`, `-A`, `--cert`, …). */
  denoFlags: string[];
  script: string;
  args: string[];
}

/**
 * This process's command line from /proc, split at the script by the number
 * of script arguments Deno reports (so a `--cert` among OUR arguments is not
 * mistaken for Deno's). Undefined where /proc is not available.
 */
export function ownDenoArgv(): DenoArgv | undefined {
  let raw: string;
  try {
    raw = Deno.readTextFileSync("/proc/self/cmdline");
  } catch {
    return undefined;
  }
  const argv = raw.split("\0");
  if (argv.at(-1) === "") argv.pop();
  const scriptAt = argv.length - Deno.args.length - 1;
  if (scriptAt < 1) return undefined;
  return {
    exe: argv[0],
    denoFlags: argv.slice(1, scriptAt),
    script: argv[scriptAt],
    args: argv.slice(scriptAt + 1),
  };
}

/** Deno flags that widen trust, with their values (`--cert FILE` and `--cert=FILE`). */
export function trustFlagsIn(denoFlags: string[]): { flag: string; value?: string }[] {
  const found: { flag: string; value?: string }[] = [];
  for (let i = 0; i < denoFlags.length; i++) {
    const a = denoFlags[i];
    if (a === "--") break;
    if (a === "--cert") found.push({ flag: "--cert", value: denoFlags[++i] });
    else if (a.startsWith("--cert=")) found.push({ flag: "--cert", value: a.slice(7) });
    else if (
      a === "--unsafely-ignore-certificate-errors" ||
      a.startsWith("--unsafely-ignore-certificate-errors=")
    ) found.push({ flag: "--unsafely-ignore-certificate-errors" });
  }
  return found;
}

/** True when `DENO_TLS_CA_STORE` asks for more than Mozilla's roots. */
function storeWidens(value: string | undefined): boolean {
  if (value === undefined) return false;
  return value.split(",").map((s) => s.trim()).some((s) => s !== "" && s !== "mozilla");
}

/**
 * Every source that widens this process's root store, as `NAME=value` or the
 * flag; empty when the store is Mozilla's alone.
 */
export function trustPollution(): string[] {
  const found: string[] = [];
  for (const name of TRUST_ENV_VARS) {
    const value = Deno.env.get(name);
    if (value === undefined) continue;
    if (name === "DENO_TLS_CA_STORE" && !storeWidens(value)) continue;
    found.push(`${name}=${value}`);
  }
  const argv = ownDenoArgv();
  if (argv) { for (const f of trustFlagsIn(argv.denoFlags)) found.push(f.flag); }
  return found;
}

/**
 * Refuses to dial when the root store holds more than Mozilla's roots: the
 * pin would then also accept whatever those extra CAs sign.
 */
export function assertCleanTrustStore(): void {
  const found = trustPollution();
  if (found.length === 0) return;
  throw new VaultError(
    "transport.extra_roots",
    `this process trusts certificate authorities beyond the pinned identity (${
      found.join(", ")
    }), so a pin could not exclude them`,
    "run the fly-vault program (it restarts itself without them); elsewhere unset DENO_CERT, " +
      "DENO_TLS_CA_STORE and NODE_EXTRA_CA_CERTS and drop --cert and " +
      "--unsafely-ignore-certificate-errors",
  );
}
