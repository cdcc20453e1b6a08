/**
 * Where `fly-vault exec demo -- true` through the master spends its time
 * (issue 10 item 2): a sim vault (flysim + real init) on loopback, a master
 * left by a first command, then ROUNDS commands with FLY_VAULT_TIMING marks,
 * printed as the median ms of each phase. With `--wan PROFILE` the client
 * runs across tools/linkem (e.g. `wan`: 40 ms RTT) in its namespace.
 *
 *   deno run -A --unstable-net bench/exec_phases.ts [ROUNDS] [GAP_MS]
 *
 * GAP_MS: pause between commands (default 1500: the master's pings at 200 ms
 * keep it fresh; 12000 lets it go quiet, as a user's commands are).
 *
 * @module
 */
import { join } from "node:path";
import { startSim, vaultFor } from "../tests/harness.ts";
import { median } from "./lib/stats.ts";

const rounds = Number(Deno.args[0] ?? 10);
const gapMs = Number(Deno.args[1] ?? 1500);
// As a user's shell: nothing that makes the client restart itself for a clean trust store.
for (const k of ["DENO_CERT", "DENO_TLS_CA_STORE", "NODE_EXTRA_CA_CERTS"]) Deno.env.delete(k);
const sim = await startSim();
try {
  const m = await sim.startMachine("phases");
  const vault: Record<string, unknown> = vaultFor(sim, m, {});
  delete vault.persist; // the default: on
  await sim.writeConfig({ demo: vault });
  const xdg = join(sim.dir, "xdg");
  await Deno.mkdir(xdg, { mode: 0o700 });
  const timing = join(sim.dir, "timing.log");
  const env = { XDG_RUNTIME_DIR: xdg, FLY_VAULT_TIMING: timing };
  const first = await sim.client(["exec", "-n", "demo", "--", "true"], { env });
  if (first.code !== 0) throw new Error(first.stderr);
  // The master is up once its socket exists.
  for (let i = 0; i < 200; i++) {
    const dir = join(xdg, "fly-vault");
    const has = (() => {
      try {
        return [...Deno.readDirSync(dir)].some((e) => e.name.endsWith(".sock"));
      } catch {
        return false;
      }
    })();
    if (has) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  const rows: Record<string, number[]> = {};
  const add = (k: string, v: number) => (rows[k] ??= []).push(v);
  for (let i = 0; i < rounds; i++) {
    await new Promise((r) => setTimeout(r, gapMs));
    await Deno.writeTextFile(timing, "");
    const t0 = Date.now() + performance.timeOrigin - performance.timeOrigin;
    const spawnAt = performance.timeOrigin + performance.now();
    const r = await sim.client(["exec", "-n", "demo", "--", "true"], { env });
    const endAt = performance.timeOrigin + performance.now();
    void t0;
    if (r.code !== 0) throw new Error(r.stderr);
    add("total (spawn to exit)", endAt - spawnAt);
    const marks = (await Deno.readTextFile(timing)).trim().split("\n").map((l) => {
      const [pid, at, , ...what] = l.split(" ");
      return { pid, at: Number(at), what: what.join(" ").split(" ")[0] };
    });
    let prev = spawnAt;
    for (const mk of marks) {
      add(mk.what, mk.at - prev);
      prev = mk.at;
    }
    add("last mark to exit seen", endAt - prev);
  }
  for (const [k, v] of Object.entries(rows)) {
    console.log(`${median(v).toFixed(1).padStart(7)} ms  ${k} (n=${v.length})`);
  }
} finally {
  await sim.client(["master", "demo", "--stop"], {
    env: { XDG_RUNTIME_DIR: join(sim.dir, "xdg") },
  }).catch(() => {});
  await sim.close();
}
