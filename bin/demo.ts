/**
 * `npm start` / `npm run sim` / `npm run demo:reset`: the deployment of
 * docs/deploy.md on this machine (flysim, `tenant create`, vault-proxy, the
 * client through the proxy).
 *   npm start                      provision if needed, then a console in the vault
 *   npm start -- <fly-vault args>  one client command against the demo vault; its exit status
 *   npm run sim                    keep the demo up in the foreground for other terminals
 *   npm run demo:reset             delete the demo's state and start over
 * When a demo already runs on the state dir, `npm start` uses it.
 */
import { formatError } from "../src/errors/mod.ts";
import {
  alreadyRunning,
  type Demo,
  demoStateDir,
  ensureProvisioned,
  joinDemo,
  note,
  resetDemo,
  runningDemo,
  runTour,
  startDemo,
} from "../src/flysim/demo.ts";

const args = Deno.args;
let status = 0;
try {
  if (args[0] === "--reset") {
    const dir = demoStateDir();
    await resetDemo(dir);
    console.log(`removed ${dir}; the next npm start creates a new vault`);
    Deno.exit(0);
  }
  const sim = args[0] === "--sim";
  const other = await runningDemo();
  if (sim && other) throw alreadyRunning(other);
  let demo: Demo;
  if (other) {
    note(`using the demo already running (pid ${other})`);
    demo = await joinDemo(demoStateDir(), other);
  } else {
    demo = await startDemo();
  }
  try {
    if (sim) {
      if (!(await ensureProvisioned(demo))) throw new Error("the vault could not be provisioned");
      console.log(`\nThe demo vault is up. In another terminal:\n`);
      console.log(`  npm start                              a console (re-attaches after ~.)`);
      console.log(`  npm start -- exec demo -- uname -a     one command`);
      console.log(`  # or the client directly:`);
      console.log(`  export FLY_VAULT_CONFIG_DIR=${demo.configDir}`);
      console.log(`  npx fly-vault sessions demo\n`);
      console.log(`Ctrl-C stops it; its volume stays for the next run.`);
      await new Promise<void>((resolve) => {
        for (const s of ["SIGINT", "SIGTERM"] as const) Deno.addSignalListener(s, resolve);
      });
    } else if (args.length > 0) {
      status = (await ensureProvisioned(demo)) ? (await demo.client(args)).code : 1;
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
