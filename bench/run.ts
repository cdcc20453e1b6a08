/**
 * `npm run bench`: runs every bench/*_bench.ts in turn (each compares
 * fly-vault with its baseline in the same run), saves each JSON result in
 * bench/results/, and prints them. Not part of npm test.
 *
 *   npm run bench            all benchmarks
 *   npm run bench -- exec    only those whose name contains "exec"
 *   npm run bench -- wan --quick   further arguments go to the selected benches
 */
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const here = fileURLToPath(new URL(".", import.meta.url));
const filter = Deno.args[0] ?? "";
const benchArgs = Deno.args.slice(1);
const names = [...Deno.readDirSync(here)]
  .map((e) => e.name)
  .filter((n) => n.endsWith("_bench.ts") && n.includes(filter))
  .sort();
await Deno.mkdir(join(here, "results"), { recursive: true });
let failed = 0;
for (const name of names) {
  console.error(`\n== ${name}`);
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--quiet", join(here, name), ...benchArgs],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  console.log(text.trim());
  if (!out.success) {
    failed++;
    continue;
  }
  await Deno.writeTextFile(join(here, "results", name.replace(/\.ts$/, ".json")), text);
}
console.error(
  `\n${names.length - failed} benchmarks ran, ${failed} failed; results in bench/results/`,
);
Deno.exit(failed ? 1 : 0);
