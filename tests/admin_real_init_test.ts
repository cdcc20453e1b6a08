/**
 * Machines really run: flysim's Machines API with the real launcher starts
 * fly-vault-init for a tenant the admin creates, with the tenant's volume
 * directory as /data and the template's env; deleting the tenant stops it.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { startOidcIssuer } from "../src/flysim/oidc.ts";
import { createInitLauncher, type LaunchedMachine } from "../src/flysim/runner.ts";
import { type SimMachineLaunch, startMachinesApi } from "../src/flysim/machines_api.ts";
import { createFlyClient, createTenant, deleteTenant, renderTemplate } from "../src/admin/mod.ts";
import { APP, template, TOKEN } from "./admin_helpers.ts";

Deno.test("admin create runs the real init with the volume as /data; delete stops it", async () => {
  const dir = await Deno.makeTempDir({ prefix: "admin-init-" });
  const issuer = await startOidcIssuer();
  const real = createInitLauncher({
    issuer,
    runDir: join(dir, "run"),
    env: { FLY_VAULT_QUIET: "1" },
  });
  const launches: Array<{ m: SimMachineLaunch; proc: LaunchedMachine }> = [];
  const sim = startMachinesApi({
    token: TOKEN,
    dataDir: dir,
    launcher: {
      async start(m) {
        const proc = await real.start(m);
        launches.push({ m, proc });
        return proc;
      },
    },
  });
  try {
    const client = createFlyClient({ apiBase: sim.baseUrl, token: TOKEN, app: APP });
    const plan = renderTemplate(template(1), { tenantId: "acme", accessToken: "real-token" });
    const made = await createTenant(client, plan);
    assert.equal(made.machines[0].state, "started");
    assert.equal(launches.length, 1);
    const { m, proc } = launches[0];
    const volume = [...sim.state.volumes.values()][0];
    assert.equal(m.volumeDir, volume.dir);
    assert.equal(m.env.ACCESS_TOKEN, "real-token");
    assert.equal(m.id, made.machines[0].id);
    // init came up on its address (the launcher resolves only once init logs that it listens).
    assert.match(proc.address, /^127\.\d+\.\d+\.\d+:8443$/);
    const machine = sim.state.machines.get(m.id)!;
    assert.equal(machine.private_ip, proc.privateIp);
    const written = [];
    for await (const e of Deno.readDir(volume.dir)) written.push(e.name);
    assert.ok(written.length > 0, "init wrote its state under /data (the volume)");
    await deleteTenant(client, "acme");
    // init shuts down cleanly on the stop signal.
    assert.equal(await proc.exited, 0);
    assert.equal(machine.state, "destroyed");
  } finally {
    await sim.close();
    await issuer.close();
    await Deno.remove(dir, { recursive: true });
  }
});
