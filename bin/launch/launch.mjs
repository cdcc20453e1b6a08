// Runs a program of bin/ under the Deno that npm installed, passing
// arguments, stdio, signals and the exit status straight through.
import { spawn } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { createRequire } from "node:module";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

// fly-vault's vault connections must trust nothing but their pins, and Deno ADDS a pin to
// the roots these variables widen (src/transport/trust_env.ts). The client gets their values
// privately, for plain HTTPS only (src/client/trust.ts), so it need not restart itself.
const TRUST_ENV_VARS = ["DENO_CERT", "DENO_TLS_CA_STORE", "NODE_EXTRA_CA_CERTS"];
const ORIGINAL_TRUST_VAR = "FLY_VAULT_ORIGINAL_TRUST";

function privateTrustEnv() {
  const env = { ...process.env };
  if (env[ORIGINAL_TRUST_VAR] !== undefined) return env;
  if (!TRUST_ENV_VARS.some((name) => env[name] !== undefined)) return env;
  const original = { env: {}, certFiles: [] };
  for (const name of TRUST_ENV_VARS) {
    if (env[name] !== undefined) original.env[name] = env[name];
    delete env[name];
  }
  env[ORIGINAL_TRUST_VAR] = JSON.stringify(original);
  return env;
}

export function launch(script, { privateTrust = false } = {}) {
  const require = createRequire(join(root, "package.json"));
  const deno = join(dirname(require.resolve("deno/package.json")), "deno");
  const child = spawn(
    deno,
    [
      "run",
      "-A",
      "--quiet",
      "--config",
      join(root, "deno.json"),
      join(root, "bin", script),
      ...process.argv.slice(2),
    ],
    { stdio: "inherit", env: privateTrust ? privateTrustEnv() : process.env },
  );
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP", "SIGWINCH"]) {
    process.on(sig, () => child.kill(sig));
  }
  child.on("exit", (code, signal) => {
    if (signal) process.kill(process.pid, signal);
    process.exit(code ?? 1);
  });
}
