/**
 * Shared pieces of the admin tests: flysim's Machines API with a fake
 * launcher, the README's template, and running the real CLI against it.
 */
import { fileURLToPath } from "node:url";
import { join } from "node:path";
import { fakeLauncher, type MachinesApi, startMachinesApi } from "../src/flysim/machines_api.ts";
import { createFlyClient, type FlyClient } from "../src/admin/mod.ts";

export const ROOT = fileURLToPath(new URL("../", import.meta.url));
export const APP = "vault-tenants";
export const TOKEN = "fly-test-api-token-0123456789";

/** The README's template, with machine_count and the image adjustable. */
export function template(count = 1, image = "registry.fly.io/vault-tenants/init:latest"): string {
  return `version = 1
app = "${APP}"
machine_count = ${count}

[machine]
name = "tenant-{{tenant_id}}-{{index}}"
region = "ord"

[machine.config]
image = "${image}"

[[machine.config.mounts]]
path = "/data"
name = "tvol_{{tenant_id}}_{{index}}"

[machine.config.env]
ACCESS_TOKEN = "{{access_token}}"
`;
}

/** A fresh flysim Machines API in a temp dir; `using`-style cleanup via close(). */
export async function startSim(): Promise<MachinesApi & { dir: string }> {
  const dir = await Deno.makeTempDir({ prefix: "admin-test-" });
  const sim = startMachinesApi({
    hostname: "127.0.0.1",
    port: 0,
    token: TOKEN,
    launcher: fakeLauncher(),
    dataDir: dir,
  });
  return {
    ...sim,
    dir,
    async close() {
      await sim.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/** An in-process client with short deadlines, so failing runs fail fast. */
export function fastClient(sim: MachinesApi, deadlineMs = 300): FlyClient {
  return createFlyClient({
    apiBase: sim.baseUrl,
    token: TOKEN,
    app: APP,
    deadlineMs,
    attemptTimeoutMs: 2_000,
    baseBackoffMs: 10,
    maxBackoffMs: 50,
  });
}

/** Runs the real fly-vault-admin; resolves with its status and output. */
export async function admin(
  sim: MachinesApi,
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--quiet", join(ROOT, "bin", "fly-vault-admin.ts"), ...args],
    env: { FLY_API_BASE: sim.baseUrl, FLY_API_TOKEN: TOKEN, FLY_APP: APP, NO_COLOR: "1", ...env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** Live (not destroyed) machines and volumes of a tenant in flysim's own records. */
export function tenantState(sim: MachinesApi, tenant: string) {
  const machines = [...sim.state.machines.values()].filter((m) =>
    m.config.metadata?.fly_vault_tenant === tenant && m.state !== "destroyed"
  );
  const volumes = [...sim.state.volumes.values()].filter((v) =>
    v.state !== "destroyed" && v.name.startsWith(`tvol_${tenant}_`)
  );
  return { machines, volumes };
}
