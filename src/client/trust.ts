/**
 * The client's own trust store must hold nothing but Mozilla's roots before
 * it dials a vault (src/transport/trust_env.ts says why: Deno adds a pin to
 * the process's roots, it cannot replace them). The roots are fixed when
 * Deno starts, so the only cure is a fresh process: when `DENO_CERT`,
 * `DENO_TLS_CA_STORE`, `NODE_EXTRA_CA_CERTS`, `--cert` or
 * `--unsafely-ignore-certificate-errors` is present, {@link ensureCleanTrustStore}
 * runs the same program again without them and passes its exit status on.
 *
 * Plain HTTPS (the OIDC issuer's discovery and keys) may legitimately need a
 * corporate CA behind a TLS-inspecting proxy: the child gets the original
 * values in a private variable and its `fetch` trusts those CAs through its
 * own HTTP client. QUIC never sees them.
 *
 * @module
 */
import { ownDenoArgv, TRUST_ENV_VARS, trustFlagsIn, trustPollution } from "../transport/mod.ts";

/** Set in the restarted child: the original trust settings, and "don't restart again". */
export const ORIGINAL_TRUST_VAR = "FLY_VAULT_ORIGINAL_TRUST";

interface OriginalTrust {
  env: Record<string, string>;
  certFiles: string[];
}

/** Deno flags the child must not get: those that widen trust, and env files (which may set them). */
function cleanFlags(flags: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < flags.length; i++) {
    const a = flags[i];
    if (a === "--cert") {
      i++;
      continue;
    }
    if (
      a.startsWith("--cert=") || a === "--unsafely-ignore-certificate-errors" ||
      a.startsWith("--unsafely-ignore-certificate-errors=") ||
      // The child gets the environment the file produced, minus the trust variables.
      a === "--env-file" || a.startsWith("--env-file=") || a === "--env" || a.startsWith("--env=")
    ) continue;
    out.push(a);
  }
  return out;
}

/**
 * Re-executes this program without any trust-widening setting, when one is
 * present, and exits with the child's status; returns when the store is
 * already clean (or in the restarted child). Loop-proof: a child marked by
 * {@link ORIGINAL_TRUST_VAR} never restarts again; if it is still polluted,
 * every dial refuses (`transport.extra_roots`).
 */
export async function ensureCleanTrustStore(): Promise<void> {
  const marked = Deno.env.get(ORIGINAL_TRUST_VAR);
  if (marked !== undefined) {
    trustCorporateCasForFetch(marked);
    return;
  }
  if (trustPollution().length === 0) return;
  const argv = ownDenoArgv();
  if (!argv) return; // no /proc: cannot restart; dialling refuses instead
  const original: OriginalTrust = {
    env: {},
    certFiles: trustFlagsIn(argv.denoFlags).flatMap((f) => f.value ? [f.value] : []),
  };
  const env = Deno.env.toObject();
  for (const name of TRUST_ENV_VARS) {
    if (env[name] !== undefined) original.env[name] = env[name];
    delete env[name];
  }
  env[ORIGINAL_TRUST_VAR] = JSON.stringify(original);
  const child = new Deno.Command(Deno.execPath(), {
    args: [...cleanFlags(argv.denoFlags), argv.script, ...argv.args],
    env,
    clearEnv: true,
    stdin: "inherit",
    stdout: "inherit",
    stderr: "inherit",
  }).spawn();
  // A terminal delivers Ctrl-C, Ctrl-\ and hangups to the child itself (same
  // process group): forwarding those would deliver them twice. Signals sent to
  // this process by pid (a supervisor's TERM, kill -INT from a script) are passed on.
  const viaTerminal = Deno.stdin.isTerminal();
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT"] as const) {
    const forward = !viaTerminal || sig === "SIGTERM";
    Deno.addSignalListener(sig, () => {
      if (!forward) return;
      try {
        child.kill(sig);
      } catch {
        // already gone
      }
    });
  }
  const status = await child.status;
  Deno.exit(status.code);
}

/** PEM text of every CA the original settings named, for HTTPS only. */
function corporatePems(original: OriginalTrust): string[] {
  const files = [...original.certFiles];
  for (const name of ["DENO_CERT", "NODE_EXTRA_CA_CERTS"]) {
    if (original.env[name]) files.push(original.env[name]);
  }
  const store = (original.env.DENO_TLS_CA_STORE ?? "").split(",").map((s) => s.trim());
  if (store.includes("system")) {
    files.push(Deno.env.get("SSL_CERT_FILE") || "/etc/ssl/certs/ca-certificates.crt");
  }
  const pems: string[] = [];
  for (const file of files) {
    try {
      const text = Deno.readTextFileSync(file);
      if (text.includes("-----BEGIN CERTIFICATE-----")) pems.push(text);
    } catch {
      // Unreadable: as Deno itself would, go on without it.
    }
  }
  return pems;
}

/** In the restarted child: HTTPS fetches trust the CAs the user had configured. */
function trustCorporateCasForFetch(marked: string): void {
  let original: OriginalTrust;
  try {
    const parsed = JSON.parse(marked);
    original = {
      env: typeof parsed?.env === "object" && parsed.env ? parsed.env : {},
      certFiles: Array.isArray(parsed?.certFiles) ? parsed.certFiles.map(String) : [],
    };
  } catch {
    return;
  }
  const base = globalThis.fetch;
  let client: Deno.HttpClient | undefined;
  globalThis.fetch = (input, init) => {
    if (!client) {
      const caCerts = corporatePems(original);
      if (caCerts.length === 0) {
        globalThis.fetch = base;
        return base(input, init);
      }
      client = Deno.createHttpClient({ caCerts });
    }
    return base(input, { client, ...init });
  };
}
