/**
 * Issue 2 / issue 10 benchmark on loopback, interleaved in one run:
 *
 * - `fly-vault exec --no-persist demo -- true` (cold: a new process dials a pinned vault)
 *   against `ssh host true` (OpenSSH, key auth). Target: ≤ 0.5× ssh.
 * - `fly-vault exec demo -- true` through the persistent client (the master) against
 *   `ssh -o ControlMaster=auto -o ControlPersist=…` through its master. Target: ≤ 1.0×.
 *
 * The client runs as `npx fly-vault` runs it: without DENO_CERT/NODE_EXTRA_CA_CERTS
 * in its environment (the launcher hands those over privately), so it starts once,
 * not twice (see src/client/trust.ts).
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
const cmDir = await Deno.makeTempDir({ prefix: "fv-ssh-cm-" });
const runDir = await Deno.makeTempDir({ prefix: "fv-run-" });
try {
  const m = await sim.startMachine("bench01");
  await sim.writeConfig({ demo: vaultFor(sim, m, { persist: "5m" }) });
  const client = [Deno.execPath(), "run", "-A", "--quiet", join(ROOT, "bin", "fly-vault.ts")];
  const cold = [...client, "exec", "-n", "--no-persist", "demo", "--", "true"];
  const viaMaster = [...client, "exec", "-n", "demo", "--", "true"];
  const env: Record<string, string> = Object.fromEntries(
    Object.entries(Deno.env.toObject()).filter(([k]) =>
      !["DENO_CERT", "DENO_TLS_CA_STORE", "NODE_EXTRA_CA_CERTS"].includes(k)
    ),
  );
  Object.assign(env, { FLY_VAULT_CONFIG_DIR: sim.configDir, XDG_RUNTIME_DIR: runDir });
  const run = (argv: string[]) => timeCommand(argv, env, { clearEnv: true });
  const ssh = ["ssh", ...sshd.options, "root@127.0.0.1"];
  const sshCm = [
    "ssh",
    ...sshd.options,
    "-o",
    "ControlMaster=auto",
    "-o",
    `ControlPath=${cmDir}/cm`,
    "-o",
    "ControlPersist=300",
    "root@127.0.0.1",
  ];

  await run(cold); // attests and pins; also warms Deno's module cache
  await run(viaMaster); // connects on its own and leaves the master
  await waitForMaster(runDir);
  await timeCommand([...sshCm, "true"]); // leaves ssh's master
  const samples = await interleave({
    cold: () => run([...cold]),
    ssh: () => timeCommand([...ssh, "true"]),
    master: () => run(viaMaster),
    sshCm: () => timeCommand([...sshCm, "true"]),
  }, rounds);
  const stat = (xs: number[]) => ({
    p50: +median(xs).toFixed(1),
    p90: +quantile(xs, 0.9).toFixed(1),
  });
  const ratio = (a: number[], b: number[]) => +(median(a) / median(b)).toFixed(3);
  const result = {
    bench: "exec",
    rounds,
    fly_vault_ms: stat(samples.cold),
    ssh_ms: stat(samples.ssh),
    ratio_p50: ratio(samples.cold, samples.ssh),
    target: "ratio_p50 <= 0.5",
    persistent: {
      fly_vault_master_ms: stat(samples.master),
      ssh_controlmaster_ms: stat(samples.sshCm),
      ratio_p50: ratio(samples.master, samples.sshCm),
      master_vs_cold: ratio(samples.master, samples.cold),
      target: "ratio_p50 <= 1.0",
    },
  };
  console.log(JSON.stringify(result, null, 2));
  await timeCommand([...client, "master", "demo", "--stop"], env, { clearEnv: true }).catch(
    () => {},
  );
  await new Deno.Command("ssh", { args: [...sshCm.slice(1, -1), "-O", "exit", "root@127.0.0.1"] })
    .output().catch(() => {});
} finally {
  await sshd.stop();
  await sim.close();
  await Deno.remove(cmDir, { recursive: true }).catch(() => {});
  await Deno.remove(runDir, { recursive: true }).catch(() => {});
}

/** Waits (on file-system events, bounded) until the master's socket is in `xdg`'s run directory. */
async function waitForMaster(xdg: string): Promise<void> {
  const dir = join(xdg, "fly-vault");
  const has = () => {
    try {
      return [...Deno.readDirSync(dir)].some((e) => e.name.endsWith(".sock"));
    } catch {
      return false;
    }
  };
  if (has()) return;
  const watcher = Deno.watchFs(xdg);
  const timer = setTimeout(() => watcher.close(), 20_000);
  try {
    for await (const _ of watcher) if (has()) return;
    throw new Error("the persistent client's master did not start");
  } finally {
    clearTimeout(timer);
    try {
      watcher.close();
    } catch { /* already */ }
  }
}
