/**
 * `deno run -A tools/linkem/cli.ts [--profile wan] [-- COMMAND...]`: two
 * namespaces joined by an emulated link (tools/linkem). With a command, runs
 * it in the client namespace (the server is 10.77.0.2) and removes the link
 * when it ends; without one, prints the namespaces and holds the link until
 * Ctrl-C. Needs root.
 *
 * @module
 */
import { Command } from "commander";
import { PROFILES, startLink } from "./mod.ts";

const program = new Command("linkem")
  .description("an emulated WAN link between two fresh network namespaces")
  .option("-p, --profile <name>", `one of ${Object.keys(PROFILES).join(", ")}`, "wan")
  .option("--seed <n>", "seed for the loss and jitter PRNG", "1")
  .argument("[command...]", "run this in the client namespace, then tear down")
  .parse(["deno", "linkem", ...Deno.args]);
const o = program.opts<{ profile: string; seed: string }>();
const link = await startLink(o.profile, { seed: Number(o.seed) });
console.error(
  `link ${link.profile.name}: ${link.clientNs} (${link.clientIp}) <-> ${link.serverNs} (${link.serverIp})`,
);
let code = 0;
try {
  if (program.args.length) {
    const argv = link.inNs(link.clientNs, program.args);
    code = (await new Deno.Command(argv[0], { args: argv.slice(1) }).spawn().status).code;
  } else {
    console.error(`ip netns exec ${link.clientNs} …   (Ctrl-C removes the link)`);
    await new Promise(() => {});
  }
} finally {
  console.error(JSON.stringify(await link.close()));
}
Deno.exit(code);
