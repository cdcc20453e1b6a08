/**
 * `npm test`: formatting, lint and type checks, then every test, ending with
 * the one line CI reads: `N passed, N failed`. Each static check counts as one
 * test, so a formatting slip is a failure CI can see.
 *
 * Arguments are passed to `deno test` (e.g. `npm test -- src/protocol`).
 */
const deno = Deno.execPath();

/** Installs the Debian packages the tests need (.ci/apt-packages) when missing, as root. */
async function ensureDebianPackages(): Promise<void> {
  const listed = (await Deno.readTextFile(new URL("../.ci/apt-packages", import.meta.url)))
    .split("\n").map((l) => l.trim()).filter((l) => l && !l.startsWith("#"));
  const missing: string[] = [];
  for (const pkg of listed) {
    const q = await new Deno.Command("dpkg-query", {
      args: ["-W", "-f=${Status}", pkg],
      stdout: "piped",
      stderr: "null",
    }).output().catch(() => null);
    if (!q || !new TextDecoder().decode(q.stdout).includes("install ok installed")) {
      missing.push(pkg);
    }
  }
  if (missing.length === 0) return;
  if (Deno.uid() !== 0) {
    console.error(`the tests need Debian packages that are not installed: ${missing.join(" ")}`);
    console.error(`hint: sudo apt-get install -y ${missing.join(" ")}   (then run npm test again)`);
    Deno.exit(1);
  }
  console.log(`installing Debian packages the tests need: ${missing.join(" ")}`);
  for (const args of [["update", "-qq"], ["install", "-y", "-qq", ...missing]]) {
    const r = await new Deno.Command("apt-get", {
      args,
      env: { DEBIAN_FRONTEND: "noninteractive" },
      stdout: "null",
    }).output();
    if (!r.success) {
      console.error(`apt-get ${args.join(" ")} failed`);
      Deno.exit(1);
    }
  }
}

await ensureDebianPackages();
const extra = Deno.args;
let passed = 0;
let failed = 0;

async function step(name: string, args: string[]): Promise<{ ok: boolean; out: string }> {
  const started = performance.now();
  const child = new Deno.Command(deno, {
    args,
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  // Stream the test output as it comes so a slow test is visible while it runs.
  const decoder = new TextDecoder();
  let out = "";
  const pump = async (stream: ReadableStream<Uint8Array>, sink: typeof Deno.stdout) => {
    for await (const chunk of stream) {
      out += decoder.decode(chunk, { stream: true });
      await sink.write(chunk);
    }
  };
  await Promise.all([pump(child.stdout, Deno.stdout), pump(child.stderr, Deno.stderr)]);
  const { success } = await child.status;
  const secs = ((performance.now() - started) / 1000).toFixed(1);
  console.log(`--- ${name}: ${success ? "ok" : "FAILED"} (${secs}s)`);
  return { ok: success, out };
}

if (extra.length === 0) {
  for (
    const [name, args] of [
      ["deno fmt --check", ["fmt", "--check"]],
      ["deno lint", ["lint"]],
      ["deno check", ["check", "."]],
    ] as const
  ) {
    const { ok } = await step(name, [...args]);
    ok ? passed++ : failed++;
  }
}

const tests = await step("deno test", ["test", "-A", "--no-check", ...extra]);
// Deno's own summary: "ok | 12 passed (3 steps) | 0 failed (4s)".
const summary = tests.out.match(/\|\s*(\d+) passed(?: \(\d+ steps?\))?\s*\|\s*(\d+) failed/);
if (summary) {
  passed += Number(summary[1]);
  failed += Number(summary[2]);
} else if (!tests.ok) {
  failed++;
}
if (!tests.ok && summary && Number(summary[2]) === 0) failed++; // crashed after the summary
console.log(`${passed} passed, ${failed} failed`);
Deno.exit(failed === 0 ? 0 : 1);
