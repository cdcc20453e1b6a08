/**
 * Idempotency under faults: a fault is injected at every API request of
 * `tenant create` and `tenant delete` in turn. A transient fault (429, 500,
 * dropped connection, slow reply, or a failure after the request took
 * effect) must be absorbed by the same run; a run broken for good at that
 * step must converge when re-run: exactly machine_count machines and
 * volumes (none after delete), no duplicates, no orphans.
 */
import assert from "node:assert/strict";
import type { Fault } from "../src/flysim/machines_api.ts";
import { createTenant, deleteTenant, renderTemplate } from "../src/admin/mod.ts";
import { fastClient, startSim, template } from "./admin_helpers.ts";

type Sim = Awaited<ReturnType<typeof startSim>>;
const COUNT = 2;

function assertConverged(sim: Sim, tenant: string, expected: number) {
  const machines = [...sim.state.machines.values()].filter((m) =>
    m.config.metadata?.fly_vault_tenant === tenant && m.state !== "destroyed"
  );
  const volumes = [...sim.state.volumes.values()].filter((v) =>
    v.state !== "destroyed" && v.name.startsWith(`tvol_${tenant}_`)
  );
  const where = `tenant ${tenant}`;
  assert.equal(machines.length, expected, `${where}: machines`);
  assert.equal(volumes.length, expected, `${where}: volumes`);
  const indexes = machines.map((m) => m.config.metadata?.fly_vault_index).sort();
  assert.deepEqual(indexes, Array.from({ length: expected }, (_, i) => String(i + 1)), where);
  for (const m of machines) {
    assert.equal(m.state, "started", `${where}: ${m.id} ${m.state}`);
    const v = volumes.filter((x) => x.attached_machine_id === m.id);
    assert.equal(v.length, 1, `${where}: volume of ${m.id}`);
    assert.equal(v[0].name, `tvol_${tenant}_${m.config.metadata?.fly_vault_index}`);
    assert.equal(m.config.mounts?.[0].volume, v[0].id);
  }
}

/** The faults that break a run for good at request `step`: it acts, then everything fails. */
function breakAt(step: number, kind: "500-after" | "drop-after" | "500"): Fault[] {
  return [
    { match: {}, nth: step, kind, times: 1 },
    { match: {}, nth: step + 1, kind: "500", times: 1e9 },
  ];
}

const TRANSIENT: Fault["kind"][] = ["429", "500", "drop", "500-after", "drop-after", "slow"];

async function countRequests(sim: Sim, fn: () => Promise<unknown>): Promise<number> {
  const before = sim.requests.length;
  await fn();
  return sim.requests.length - before;
}

Deno.test("tenant create: a fault at every step, transient or fatal, converges", async () => {
  const sim = await startSim();
  // Runs that must succeed get time to spare on a loaded machine; runs broken on purpose
  // give up fast.
  const client = fastClient(sim, 10_000);
  const breaking = fastClient(sim, 300);
  const plan = (tenant: string) =>
    renderTemplate(template(COUNT), { tenantId: tenant, accessToken: "t" });
  let n = 0;
  try {
    const steps = await countRequests(sim, () => createTenant(client, plan("base")));
    assertConverged(sim, "base", COUNT);
    assert.ok(steps >= 2 + 2 * COUNT, `create made ${steps} requests`);
    for (let step = 1; step <= steps; step++) {
      for (const kind of TRANSIENT) {
        const tenant = `t${++n}`;
        sim.faults.splice(0, Infinity, {
          match: {},
          nth: step,
          kind,
          retryAfter: 0,
          delayMs: 30,
        });
        await createTenant(client, plan(tenant));
        assert.equal(sim.faults[0].fired, 1, `step ${step} ${kind} fired`);
        assertConverged(sim, tenant, COUNT);
      }
      for (const kind of ["500", "500-after", "drop-after"] as const) {
        const tenant = `t${++n}`;
        sim.faults.splice(0, Infinity, ...breakAt(step, kind));
        await createTenant(breaking, plan(tenant)).then(
          () => {},
          (err) => assert.match(err.message, /(POST|GET|DELETE) \/v1\/apps\//),
        );
        sim.faults.splice(0, Infinity);
        await createTenant(client, plan(tenant));
        assertConverged(sim, tenant, COUNT);
        // And a third run is a no-op.
        const again = await createTenant(client, plan(tenant));
        assert.ok(again.machines.every((m) => !m.created));
        assert.equal(again.volumesCreated.length, 0);
      }
    }
  } finally {
    await sim.close();
  }
});

Deno.test("tenant delete: a fault at every step, transient or fatal, converges to nothing", async () => {
  const sim = await startSim();
  // Runs that must succeed get time to spare on a loaded machine; runs broken on purpose
  // give up fast.
  const client = fastClient(sim, 10_000);
  const breaking = fastClient(sim, 300);
  const plan = (tenant: string) =>
    renderTemplate(template(COUNT), { tenantId: tenant, accessToken: "t" });
  let n = 0;
  try {
    await createTenant(client, plan("base"));
    const steps = await countRequests(sim, () => deleteTenant(client, "base"));
    assertConverged(sim, "base", 0);
    assert.ok(steps >= 1 + 2 * COUNT, `delete made ${steps} requests`);
    for (let step = 1; step <= steps; step++) {
      for (const kind of [...TRANSIENT, "break-500", "break-500-after", "break-drop-after"]) {
        const tenant = `d${++n}`;
        await createTenant(client, plan(tenant));
        assertConverged(sim, tenant, COUNT);
        if (kind.startsWith("break-")) {
          const k = kind.slice(6) as "500" | "500-after" | "drop-after";
          sim.faults.splice(0, Infinity, ...breakAt(step, k));
          await deleteTenant(breaking, tenant).then(
            () => {},
            (err) => assert.match(err.message, /(POST|GET|DELETE) \/v1\/apps\//),
          );
          sim.faults.splice(0, Infinity);
        } else {
          sim.faults.splice(0, Infinity, {
            match: {},
            nth: step,
            kind: kind as Fault["kind"],
            retryAfter: 0,
            delayMs: 30,
          });
        }
        await deleteTenant(client, tenant);
        sim.faults.splice(0, Infinity);
        assertConverged(sim, tenant, 0);
        await deleteTenant(client, tenant);
      }
    }
  } finally {
    await sim.close();
  }
});

Deno.test("tenant delete --template removes volumes a broken create left before any machine", async () => {
  const sim = await startSim();
  // Runs that must succeed get time to spare on a loaded machine; runs broken on purpose
  // give up fast.
  const client = fastClient(sim, 10_000);
  const breaking = fastClient(sim, 300);
  try {
    const plan = renderTemplate(template(COUNT), { tenantId: "orph", accessToken: "t" });
    // The create dies right after its first volume exists: no machine ever mounted it.
    sim.faults.splice(0, Infinity, ...breakAt(3, "500-after"));
    await createTenant(breaking, plan).then(() => assert.fail("create should fail"), () => {});
    sim.faults.splice(0, Infinity);
    const orphans = () =>
      [...sim.state.volumes.values()].filter((v) =>
        v.state !== "destroyed" && v.name.startsWith("tvol_orph_")
      );
    assert.equal(orphans().length, 1);
    await deleteTenant(client, "orph");
    assert.equal(orphans().length, 1, "without the template the orphan cannot be named");
    const names = plan.machines.flatMap((m) => m.volumes.map((v) => v.request.name));
    await deleteTenant(client, "orph", { volumeNames: names });
    assert.equal(orphans().length, 0);
  } finally {
    await sim.close();
  }
});

Deno.test("a machine that fails to start is named, with its state", async () => {
  const dir = await Deno.makeTempDir();
  const { startMachinesApi } = await import("../src/flysim/machines_api.ts");
  const sim = startMachinesApi({
    token: "fly-test-api-token-0123456789",
    dataDir: dir,
    launcher: { start: () => Promise.reject(new Error("image not found")) },
  });
  try {
    const plan = renderTemplate(template(1), { tenantId: "bad", accessToken: "t" });
    await assert.rejects(
      createTenant(fastClient(sim as Sim), plan),
      /machine [0-9a-f]{14} \(tenant-bad-1\) did not start: it is failed/,
    );
  } finally {
    await sim.close();
    await Deno.remove(dir, { recursive: true });
  }
});
