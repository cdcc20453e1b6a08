/**
 * fly-vault-admin against flysim's Machines API:
 * - `tenant usage-facts` over 5,000 machines with 20 events each
 *   (target < 1 s and < 200 MiB), measured in a child process;
 * - `tenant create` of 50 tenants with bounded concurrency, with no added
 *   latency and with 20 ms of API latency per request (the admin should
 *   scale with concurrency, i.e. be limited by the API, not by itself).
 *
 * Prints one JSON object. Run alone: `npx deno run -A bench/admin_bench.ts`.
 */
import { fileURLToPath } from "node:url";
import { join } from "node:path";
import { fakeLauncher, type SimMachine, startMachinesApi } from "../src/flysim/mod.ts";
import { createFlyClient, createTenant, pool, renderTemplate } from "../src/admin/mod.ts";
import { template } from "../tests/admin_helpers.ts";

const ROOT = fileURLToPath(new URL("../", import.meta.url));
const TOKEN = "bench-token";
const APP = "vault-tenants";
const MACHINES = 5_000;
const EVENTS = 20;
const TENANTS = 50;
const CONCURRENCY = 8;

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const round = (x: number) => Math.round(x * 10) / 10;

const dir = await Deno.makeTempDir({ prefix: "admin-bench-" });
const sim = startMachinesApi({ token: TOKEN, launcher: fakeLauncher(), dataDir: dir });
const result: Record<string, unknown> = {};
try {
  // Seed 5,000 machines (1,000 tenants × 5) with 20 events each, half of them stopped.
  const base = Date.now() - 30 * 86_400_000;
  for (let i = 0; i < MACHINES; i++) {
    const id = (0x10000000000000 + i).toString(16).slice(0, 14);
    const vol = `vol_${i.toString(16).padStart(16, "0")}`;
    const tenant = `t${Math.floor(i / 5)}`;
    const index = String((i % 5) + 1);
    const events: SimMachine["events"] = [];
    let t = base + i * 1000;
    events.push({ id: `e${i}-0`, type: "launch", status: "created", source: "user", timestamp: t });
    for (let e = 1; e < EVENTS; e++) {
      t += 60_000;
      const cycle = ["starting", "started", "stopping", "stopped"][(e - 1) % 4];
      const type = cycle.startsWith("st") && cycle !== "stopped" && cycle !== "stopping"
        ? "start"
        : cycle === "stopped"
        ? "exit"
        : "stop";
      events.push({ id: `e${i}-${e}`, type, status: cycle, source: "flyd", timestamp: t });
    }
    const state = i % 2 ? "stopped" : events.at(-1)!.status;
    sim.insertMachine({
      id,
      app: APP,
      name: `tenant-${tenant}-${index}`,
      state,
      region: "ord",
      instance_id: `01JBENCH${i.toString().padStart(18, "0")}`,
      private_ip: `fdaa:0:1:a7b:1::${i.toString(16)}`,
      config: {
        image: "registry.fly.io/vault-tenants/init:latest",
        env: { ACCESS_TOKEN: "x".repeat(32) },
        metadata: { fly_vault_tenant: tenant, fly_vault_index: index },
        mounts: [{ volume: vol, path: "/data", name: `tvol_${tenant}_${index}`, size_gb: 1 }],
        guest: { cpu_kind: "shared", cpus: 1, memory_mb: 256 },
      },
      events,
      created_at: new Date(base).toISOString(),
      updated_at: new Date(t).toISOString(),
    });
    sim.state.volumes.set(vol, {
      id: vol,
      app: APP,
      name: `tvol_${tenant}_${index}`,
      state: "created",
      size_gb: 1 + (i % 3),
      region: "ord",
      zone: "ord-1",
      encrypted: true,
      attached_machine_id: id,
      created_at: new Date(base).toISOString(),
      dir: join(dir, "unused"),
    });
  }

  // usage-facts in a child process: in-process time and peak RSS, three runs.
  const runs: Array<{ ms: number; facts: number; bytes: number; peak_rss_mib: number }> = [];
  const cli: number[] = [];
  for (let r = 0; r < 3; r++) {
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "--quiet",
        join(ROOT, "bench", "admin_usage_child.ts"),
        sim.baseUrl,
        TOKEN,
        APP,
      ],
      stdout: "piped",
      stderr: "inherit",
    }).output();
    if (!out.success) throw new Error("usage-facts child failed");
    runs.push(JSON.parse(new TextDecoder().decode(out.stdout)));
    // And the real CLI, end to end (process start included).
    const t0 = performance.now();
    const c = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "--quiet",
        join(ROOT, "bin", "fly-vault-admin.ts"),
        "tenant",
        "usage-facts",
      ],
      env: { FLY_API_BASE: sim.baseUrl, FLY_API_TOKEN: TOKEN, FLY_APP: APP },
      stdout: "null",
      stderr: "inherit",
    }).output();
    if (!c.success) throw new Error("fly-vault-admin tenant usage-facts failed");
    cli.push(performance.now() - t0);
  }
  if (runs[0].facts !== MACHINES) {
    throw new Error(`expected ${MACHINES} facts, got ${runs[0].facts}`);
  }
  const facts = {
    machines: MACHINES,
    events_per_machine: EVENTS,
    in_process_ms: round(median(runs.map((r) => r.ms))),
    cli_wall_ms: round(median(cli)),
    peak_rss_mib: round(Math.max(...runs.map((r) => r.peak_rss_mib))),
    output_mib: round(runs[0].bytes / 1048576),
    target: "< 1000 ms, < 200 MiB",
  };
  result.usage_facts = { ...facts, ok: facts.in_process_ms < 1000 && facts.peak_rss_mib < 200 };

  // tenant create × 50 (machine_count 1), bounded concurrency.
  const text = template(1);
  // A fresh, empty app for creates: the 5,000 seeded machines would make every create's
  // list calls measure the size of that app instead of the create.
  const createDir = await Deno.makeTempDir({ prefix: "admin-bench-create-" });
  const fresh = startMachinesApi({ token: TOKEN, launcher: fakeLauncher(), dataDir: createDir });
  const client = createFlyClient({ apiBase: fresh.baseUrl, token: TOKEN, app: APP });
  const create = async (prefix: string, concurrency: number, latencyMs: number) => {
    const sim = fresh;
    sim.faults.splice(0, Infinity);
    if (latencyMs) sim.faults.push({ match: {}, kind: "slow", delayMs: latencyMs, times: 1e9 });
    const before = sim.requests.length;
    const ids = Array.from({ length: TENANTS }, (_, i) => `${prefix}${i}`);
    const t0 = performance.now();
    await pool(ids, concurrency, async (id) => {
      await createTenant(client, renderTemplate(text, { tenantId: id, accessToken: "tok" }));
    });
    const ms = performance.now() - t0;
    sim.faults.splice(0, Infinity);
    return {
      tenants: TENANTS,
      concurrency,
      api_latency_ms: latencyMs,
      wall_ms: round(ms),
      per_tenant_ms: round(ms / TENANTS),
      api_requests: sim.requests.length - before,
    };
  };
  try {
    result.tenant_create = [
      await create("a", CONCURRENCY, 0),
      await create("b", 1, 20),
      await create("c", CONCURRENCY, 20),
    ];
  } finally {
    await fresh.close();
    await Deno.remove(createDir, { recursive: true });
  }
} finally {
  await sim.close();
  await Deno.remove(dir, { recursive: true });
}
console.log(JSON.stringify({ bench: "admin", ...result }, null, 2));
