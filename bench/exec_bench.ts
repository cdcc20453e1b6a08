/**
 * Issue 2 benchmark: `fly-vault exec demo -- true` on a pinned vault against
 * `ssh host true` (OpenSSH, key auth) on loopback, interleaved in one run.
 * Target: fly-vault's median wall time ≤ 0.5× OpenSSH's.
 *
 *   npx deno run -A bench/exec_bench.ts [rounds]
 */
import { join } from "node:path";
import { ROOT, startSim, vaultFor } from "../tests/harness.ts";
import { startSshd } from "../tests/sshd.ts";
import { interleave, median, quantile, timeCommand } from "./lib/stats.ts";

const rounds = Number(Deno.args[0] ?? 30);
const sim = await startSim();
const sshd = await startSshd();
try {
  const m = await sim.startMachine("bench01");
  await sim.writeConfig({ demo: vaultFor(sim, m) });
  const flyVault = [
    Deno.execPath(),
    "run",
    "-A",
    "--quiet",
    join(ROOT, "bin", "fly-vault.ts"),
    "exec",
    "-n",
    "demo",
    "--",
    "true",
  ];
  const env = { FLY_VAULT_CONFIG_DIR: sim.configDir };
  await timeCommand(flyVault, env); // attests and pins; also warms Deno's module cache
  const samples = await interleave({
    "fly-vault exec (pinned)": () => timeCommand(flyVault, env),
    "ssh host true": () => timeCommand(["ssh", ...sshd.options, "root@127.0.0.1", "true"]),
  }, rounds);
  const fv = samples["fly-vault exec (pinned)"];
  const ssh = samples["ssh host true"];
  const result = {
    bench: "exec",
    rounds,
    fly_vault_ms: { p50: median(fv), p90: quantile(fv, 0.9) },
    ssh_ms: { p50: median(ssh), p90: quantile(ssh, 0.9) },
    ratio_p50: median(fv) / median(ssh),
    target: "ratio_p50 <= 0.5",
  };
  console.log(JSON.stringify(result, null, 2));
} finally {
  await sshd.stop();
  await sim.close();
}
