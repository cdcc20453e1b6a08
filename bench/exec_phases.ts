/**
 * Where `fly-vault exec demo -- true` through the master spends its time
 * (issue 10 item 2): a master left by a first command, then ROUNDS commands
 * with FLY_VAULT_TIMING marks, printed as the median ms between marks.
 *
 *   deno run -A bench/exec_phases.ts [ROUNDS] [GAP_MS]          # loopback sim
 *   deno run -A bench/exec_phases.ts --wan PROFILE [ROUNDS] [GAP_MS]
 *
 * `--wan` runs the client across tools/linkem (e.g. `wan`: 40 ms RTT), the
 * vault (flysim + real init) in the server namespace as bench/wan_server.ts
 * serves it. GAP_MS: pause between commands (default 1500: the master's pings,
 * every 200 ms while commands come, keep its proof fresh; 12000 lets it go
 * quiet, as a user's commands often are).
 *
 * @module
 */
import { join } from "node:path";
import { ROOT, startSim, vaultFor } from "../tests/harness.ts";
import { median } from "./lib/stats.ts";
import { benchVaultTable } from "./lib/vault_toml.ts";
import { startLink } from "../tools/linkem/mod.ts";

const client = [Deno.execPath(), "run", "-A", "--quiet", join(ROOT, "bin", "fly-vault.ts")];

/** Runs the measured commands against the vault that `config.toml` in `configDir` names. */
async function measure(configDir: string, workDir: string, rounds: number, gapMs: number) {
  const xdg = join(workDir, "xdg");
  await Deno.mkdir(xdg, { mode: 0o700, recursive: true });
  const timing = join(workDir, "timing.log");
  const env = { FLY_VAULT_CONFIG_DIR: configDir, XDG_RUNTIME_DIR: xdg, FLY_VAULT_TIMING: timing };
  const run = async (args: string[]) => {
    const out = await new Deno.Command(client[0], {
      args: [...client.slice(1), ...args],
      env,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!out.success) throw new Error(new TextDecoder().decode(out.stderr));
  };
  await run(["exec", "-n", "demo", "--", "true"]);
  // The master is up once its socket exists (bounded).
  const sockDir = join(xdg, "fly-vault");
  for (let i = 0; i < 400; i++) {
    try {
      if ([...Deno.readDirSync(sockDir)].some((e) => e.name.endsWith(".sock"))) break;
    } catch { /* not yet */ }
    await new Promise((r) => setTimeout(r, 50));
  }
  const rows: Record<string, number[]> = {};
  const add = (k: string, v: number) => (rows[k] ??= []).push(v);
  const now = () => performance.timeOrigin + performance.now();
  for (let i = 0; i < rounds; i++) {
    await new Promise((r) => setTimeout(r, gapMs));
    await Deno.writeTextFile(timing, "");
    const spawnAt = now();
    await run(["exec", "-n", "demo", "--", "true"]);
    const endAt = now();
    add("total (spawn to exit)", endAt - spawnAt);
    const marks = (await Deno.readTextFile(timing)).trim().split("\n").filter(Boolean).map((l) => {
      const [, at, , what] = l.split(" ");
      return { at: Number(at), what };
    });
    let prev = spawnAt;
    for (const mk of marks) {
      add(mk.what, mk.at - prev);
      prev = mk.at;
    }
    add("(exit seen by the parent)", endAt - prev);
  }
  await run(["master", "demo", "--stop"]).catch(() => {});
  return Object.entries(rows).map(([k, v]) =>
    `${median(v).toFixed(1).padStart(7)} ms  ${k} (n=${v.length})`
  ).join("\n");
}

// Nothing that makes the client restart itself for a clean trust store, unless asked to keep
// it (FV_KEEP_TRUST_ENV=1: as the WAN bench runs, with this machine's environment).
if (Deno.env.get("FV_KEEP_TRUST_ENV") !== "1") {
  for (const k of ["DENO_CERT", "DENO_TLS_CA_STORE", "NODE_EXTRA_CA_CERTS"]) Deno.env.delete(k);
}

if (Deno.args[0] === "--client") {
  // In the client namespace: the server's info, then measure.
  const info = JSON.parse(Deno.args[1]);
  const work = await Deno.makeTempDir({ prefix: "fv-phases-" });
  const configDir = join(work, "config");
  await Deno.mkdir(configDir, { mode: 0o700 });
  const lines = benchVaultTable("demo", {
    address: info.machineAddress,
    org: info.org,
    app: info.app,
    issuer: info.issuer,
  });
  await Deno.writeTextFile(join(configDir, "config.toml"), lines.join("\n"), { mode: 0o600 });
  try {
    console.log(await measure(configDir, work, Number(Deno.args[2]), Number(Deno.args[3])));
  } finally {
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
} else if (Deno.args[0] === "--wan") {
  const [profile, rounds = "10", gap = "1500"] = Deno.args.slice(1);
  const link = await startLink(profile);
  let server: Deno.ChildProcess | undefined;
  try {
    const sArgv = link.inNs(link.serverNs, [
      Deno.execPath(),
      "run",
      "-A",
      "--quiet",
      join(ROOT, "bench", "wan_server.ts"),
      link.serverIp,
    ]);
    server = new Deno.Command(sArgv[0], {
      args: sArgv.slice(1),
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const reader = server.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let text = "";
    const deadline = setTimeout(() => server?.kill("SIGKILL"), 120_000);
    while (!text.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) throw new Error("the server side exited before it was ready");
      text += value;
    }
    clearTimeout(deadline);
    const info = { ...JSON.parse(text.split("\n")[0]), host: link.serverIp };
    const cArgv = link.inNs(link.clientNs, [
      Deno.execPath(),
      "run",
      "-A",
      "--quiet",
      import.meta.filename!,
      "--client",
      JSON.stringify(info),
      rounds,
      gap,
    ]);
    const out = await new Deno.Command(cArgv[0], { args: cArgv.slice(1), stderr: "inherit" })
      .output();
    console.log(`${profile} (${link.profile.rttMs ?? "?"} ms RTT profile), gap ${gap} ms:`);
    console.log(new TextDecoder().decode(out.stdout));
  } finally {
    await server?.stdin.close().catch(() => {});
    await link.close();
  }
} else {
  const rounds = Number(Deno.args[0] ?? 10);
  const gapMs = Number(Deno.args[1] ?? 1500);
  const sim = await startSim();
  try {
    const m = await sim.startMachine("phases");
    const vault: Record<string, unknown> = vaultFor(sim, m, {});
    delete vault.persist; // the default: on
    await sim.writeConfig({ demo: vault });
    console.log(await measure(sim.configDir, sim.dir, rounds, gapMs));
  } finally {
    await sim.close();
  }
}
