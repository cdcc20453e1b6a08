// Runs a program of bin/ under the Deno that npm installed, passing
// arguments, stdio, signals and the exit status straight through.
import { spawn } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { createRequire } from "node:module";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

export function launch(script) {
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
    { stdio: "inherit" },
  );
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP", "SIGWINCH"]) {
    process.on(sig, () => child.kill(sig));
  }
  child.on("exit", (code, signal) => {
    if (signal) process.kill(process.pid, signal);
    process.exit(code ?? 1);
  });
}
