/**
 * `npm start` / `npm run sim` / `npm run demo:reset`: the embedded demo.
 *   npm start                      the guided tour, then a console when stdin is a terminal
 *   npm start -- <fly-vault args>  one client command against the demo vault; its exit status
 *   npm run sim                    keep flysim and the vault up in the foreground
 *   npm run demo:reset             delete the demo's state and start over
 */
import { demoStateDir, runTour, startDemo } from "../src/flysim/demo.ts";
import { formatError } from "../src/errors/mod.ts";

const args = Deno.args;
if (args[0] === "--reset") {
  const dir = demoStateDir();
  await Deno.remove(dir, { recursive: true }).catch(() => {});
  console.log(`removed ${dir}; the next npm start creates a new vault`);
  Deno.exit(0);
}

let status = 0;
try {
  const sim = args[0] === "--sim";
  const demo = await startDemo({ quiet: !sim && args.length > 0 });
  try {
    if (sim) {
      console.log(`flysim is running the demo vault. In another terminal:\n`);
      console.log(`  export FLY_VAULT_CONFIG_DIR=${demo.configDir}`);
      console.log(`  npx fly-vault exec demo -- uname -a\n`);
      console.log(`Ctrl-C stops it; its volume stays for the next run.`);
      await new Promise<void>((resolve) => {
        for (const s of ["SIGINT", "SIGTERM"] as const) Deno.addSignalListener(s, resolve);
      });
    } else if (args.length > 0) {
      status = await demo.client(args);
    } else {
      status = await runTour(demo);
    }
  } finally {
    await demo.close();
  }
} catch (err) {
  console.error(formatError(err));
  status = 1;
}
Deno.exit(status);
