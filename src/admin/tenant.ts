/**
 * The tenant commands: create (idempotent), list, usage facts, delete and
 * image updates. A tenant is the set of machines whose metadata carries
 * `fly_vault_tenant = ID`; nothing is inferred from names alone.
 *
 * @module
 */
import { VaultError } from "../errors/mod.ts";
import { type FlyApiError, type FlyClient, isNotFound } from "./client.ts";
import type { Machine, MachineEvent, Volume } from "./schemas.ts";
import {
  checkTenantId,
  INDEX_KEY,
  machineRequest,
  type PlannedMachine,
  type PlannedVolume,
  TENANT_KEY,
  type TenantPlan,
} from "./template.ts";

/** Where progress lines go (stderr in the CLI). */
export type Log = (line: string) => void;

const GONE_VOLUME = new Set(["destroyed", "destroying", "pending_destroy", "scheduling_destroy"]);
const live = (v: Volume) => !GONE_VOLUME.has(v.state ?? "");
const indexOf = (m: Machine) => Number(m.config?.metadata?.[INDEX_KEY] ?? NaN);
const tenantOf = (m: Machine) => m.config?.metadata?.[TENANT_KEY];

function isAmbiguous(err: unknown): err is FlyApiError {
  return err instanceof VaultError && err.code === "fly.ambiguous";
}

function isNameTaken(err: unknown): boolean {
  const e = err as FlyApiError;
  return e instanceof VaultError && e.status === 422 &&
    (e.flyStatus === "name_taken" || /already been taken/i.test(e.message));
}

/** What `tenant create` did. */
export interface CreateResult {
  tenant: string;
  machines: Array<{
    index: number;
    id: string;
    name: string;
    state: string;
    created: boolean;
    private_ip?: string;
  }>;
  volumesCreated: string[];
  /** Orphaned duplicate volumes removed (left by lost replies). */
  volumesRemoved: string[];
}

/** How many times an ambiguous create is re-checked and retried before giving up. */
const CREATE_ATTEMPTS = 4;

/**
 * Creates or completes a tenant: volumes first, then machines, each looked
 * up before it is created, so a re-run after any partial failure finishes
 * the job without duplicates. Waits until new machines have started.
 */
export async function createTenant(
  client: FlyClient,
  plan: TenantPlan,
  opts: { log?: Log; wait?: boolean } = {},
): Promise<CreateResult> {
  const log = opts.log ?? (() => {});
  if (plan.app !== undefined && plan.app !== client.app) {
    throw new VaultError(
      "admin.app_mismatch",
      `the template is for app ${JSON.stringify(plan.app)} but --app is ${
        JSON.stringify(client.app)
      }`,
      "pass the template's app with --app, or change app in the template",
    );
  }
  const result: CreateResult = {
    tenant: plan.tenantId,
    machines: [],
    volumesCreated: [],
    volumesRemoved: [],
  };
  const listTenant = () => client.listMachines({ metadata: { [TENANT_KEY]: plan.tenantId } });
  let existing = await listTenant();
  for (const m of existing) {
    const i = indexOf(m);
    if (!(i >= 1 && i <= plan.machineCount)) {
      log(`note: machine ${m.id} of tenant ${plan.tenantId} has index ${i}, outside the template`);
    }
  }
  let volumes = await client.listVolumes();
  const toWait: Machine[] = [];
  for (const planned of plan.machines) {
    const have = existing.find((m) => indexOf(m) === planned.index);
    if (have) {
      result.machines.push({
        index: planned.index,
        id: have.id,
        name: have.name ?? "",
        state: have.state,
        created: false,
        ...(have.private_ip ? { private_ip: have.private_ip } : {}),
      });
      continue;
    }
    const volumeIds: string[] = [];
    for (const pv of planned.volumes) {
      const { volume, created, removed, list } = await ensureVolume(client, pv, volumes, log);
      volumes = list;
      volumeIds.push(volume.id);
      if (created) result.volumesCreated.push(volume.id);
      result.volumesRemoved.push(...removed);
    }
    const made = await ensureMachine(client, plan.tenantId, planned, volumeIds, log);
    existing = made.list ?? existing;
    result.machines.push({
      index: planned.index,
      id: made.machine.id,
      name: made.machine.name ?? "",
      state: made.machine.state,
      created: made.created,
      ...(made.machine.private_ip ? { private_ip: made.machine.private_ip } : {}),
    });
    if (made.created) toWait.push(made.machine);
  }
  if (opts.wait !== false) {
    for (const m of toWait) {
      try {
        await client.waitMachine(m.id, {
          state: "started",
          timeoutSec: 60,
          instanceId: m.instance_id,
        });
      } catch (err) {
        // Say where the machine is stuck, not just that waiting failed.
        const now = await client.getMachine(m.id).catch(() => undefined);
        if (!now || now.state === "started") throw err;
        throw new VaultError(
          "admin.machine_not_started",
          `machine ${m.id} (${m.name}) did not start: it is ${now.state}`,
          `see \`fly logs -a ${client.app} -i ${m.id}\`; re-running create keeps it and waits again`,
          { cause: err },
        );
      }
      const row = result.machines.find((r) => r.id === m.id);
      if (row) row.state = "started";
    }
  }
  return result;
}

async function ensureVolume(
  client: FlyClient,
  pv: PlannedVolume,
  initial: Volume[],
  log: Log,
): Promise<{ volume: Volume; created: boolean; removed: string[]; list: Volume[] }> {
  let list = initial;
  const removed: string[] = [];
  for (let attempt = 1;; attempt++) {
    const named = list.filter((v) => v.name === pv.request.name && live(v))
      .sort((a, b) =>
        (a.created_at ?? "").localeCompare(b.created_at ?? "") || a.id.localeCompare(b.id)
      );
    if (named.length) {
      const attached = named.find((v) => v.attached_machine_id);
      if (attached) {
        throw new VaultError(
          "admin.volume_in_use",
          `volume ${pv.request.name} (${attached.id}) is attached to machine ${attached.attached_machine_id}, which is not this tenant's machine for it`,
          "pick another volume name in the template, or delete that machine",
        );
      }
      const [keep, ...extra] = named;
      for (const v of extra) {
        // Two unattached volumes with one name can only be a create whose reply was lost.
        log(`removing duplicate volume ${v.id} (${v.name})`);
        await client.deleteVolume(v.id).catch((err) => {
          if (!isNotFound(err)) throw err;
        });
        removed.push(v.id);
      }
      return { volume: keep, created: false, removed, list };
    }
    try {
      log(`creating volume ${pv.request.name} (${pv.request.size_gb} GB, ${pv.request.region})`);
      const volume = await client.createVolume(pv.request);
      return { volume, created: true, removed, list: [...list, volume] };
    } catch (err) {
      if (!isAmbiguous(err) || attempt >= CREATE_ATTEMPTS) throw err;
      log(`${err.message}; checking whether the volume exists`);
      list = await client.listVolumes();
    }
  }
}

async function ensureMachine(
  client: FlyClient,
  tenant: string,
  planned: PlannedMachine,
  volumeIds: string[],
  log: Log,
): Promise<{ machine: Machine; created: boolean; list?: Machine[] }> {
  for (let attempt = 1;; attempt++) {
    try {
      log(`creating machine ${planned.request.name} (${tenant} #${planned.index})`);
      const machine = await client.createMachine(machineRequest(planned, volumeIds));
      return { machine, created: true };
    } catch (err) {
      if (!(isAmbiguous(err) || isNameTaken(err)) || attempt >= CREATE_ATTEMPTS) throw err;
      const list = await client.listMachines({ metadata: { [TENANT_KEY]: tenant } });
      const found = list.find((m) => indexOf(m) === planned.index);
      if (found) return { machine: found, created: true, list };
      if (isNameTaken(err)) {
        throw new VaultError(
          "admin.name_taken",
          `machine name ${planned.request.name} is taken by a machine that is not tenant ${tenant}'s`,
          "change machine.name in the template, or remove that machine",
        );
      }
      log(`${(err as Error).message}; machine not there, retrying`);
    }
  }
}

/** A row of `tenant list --json`. */
export interface TenantSummary {
  tenant: string;
  machines: Array<{
    id: string;
    name: string;
    index: number;
    state: string;
    region: string;
    image: string;
    instance_id: string;
    private_ip: string;
    volumes: string[];
    created_at: string;
    updated_at: string;
  }>;
}

/** All tenants with their (live) machines, sorted by tenant and index. */
export async function listTenants(client: FlyClient): Promise<TenantSummary[]> {
  const all = await client.listMachines();
  const byTenant = new Map<string, TenantSummary>();
  for (const m of all) {
    const tenant = tenantOf(m);
    if (tenant === undefined || m.state === "destroyed") continue;
    let row = byTenant.get(tenant);
    if (!row) byTenant.set(tenant, row = { tenant, machines: [] });
    row.machines.push({
      id: m.id,
      name: m.name ?? "",
      index: indexOf(m),
      state: m.state,
      region: m.region ?? "",
      image: m.config?.image ?? "",
      instance_id: m.instance_id ?? "",
      private_ip: m.private_ip ?? "",
      volumes: (m.config?.mounts ?? []).flatMap((x) => x.volume ? [x.volume] : []),
      created_at: m.created_at ?? "",
      updated_at: m.updated_at ?? "",
    });
  }
  const out = [...byTenant.values()].sort((a, b) => a.tenant.localeCompare(b.tenant));
  for (const t of out) t.machines.sort((a, b) => a.index - b.index);
  return out;
}

/** Where a user's client reaches a tenant's machines. */
export interface ClientConfigInput {
  app: string;
  /** The Fly org slug; a placeholder is printed when unknown. */
  org?: string;
  /** vault-proxy's public `host:port`; without it, each machine's 6PN address (WireGuard). */
  proxy?: string;
}

/** The port init listens on, which 6PN reaches directly. */
export const INIT_PORT = 8443;

/** A TOML basic string: JSON's escapes, plus DEL and C1 controls a terminal would act on. */
function tomlString(value: string): string {
  return JSON.stringify(value).replace(
    /[\u007f-\u009f]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
}

/** One client table per machine: name, address, org, app, machine id. Never the token. */
export function clientVaults(
  result: CreateResult,
  where: ClientConfigInput,
): Array<{ name: string; address: string; org: string; app: string; machine_id: string }> {
  const single = result.machines.length === 1;
  return result.machines.map((m) => ({
    name: single ? result.tenant : `${result.tenant}-${m.index}`,
    address: where.proxy ??
      (m.private_ip ? `[${m.private_ip}]:${INIT_PORT}` : `<machine ${m.id}'s 6PN address>:8443`),
    org: where.org ?? "<your Fly org slug>",
    app: where.app,
    machine_id: m.id,
  }));
}

/**
 * The `[vault.NAME]` tables a user pastes into `~/.config/fly-vault/config.toml`,
 * `machine_id` included so the first attestation pins that machine. The access
 * token is never printed (the admin hands it over apart, as with every token).
 */
export function formatClientConfig(result: CreateResult, where: ClientConfigInput): string {
  return clientVaults(result, where).map((v) =>
    [
      `[vault.${v.name}]`,
      `address = ${tomlString(v.address)}`,
      `org = ${tomlString(v.org)}`,
      `app = ${tomlString(v.app)}`,
      `machine_id = ${tomlString(v.machine_id)}`,
      `access_token = "<from your admin>"`,
    ].join("\n")
  ).join("\n\n");
}

/** Renders `tenant list` as a table (one row per tenant, or per machine with `wide`). */
export function formatTenantTable(tenants: TenantSummary[], wide: boolean): string {
  const rows: string[][] = wide
    ? [["TENANT", "#", "MACHINE", "NAME", "STATE", "REGION", "IMAGE", "VOLUME", "PRIVATE IP"]]
    : [["TENANT", "MACHINES", "STATES", "REGIONS", "IMAGE"]];
  for (const t of tenants) {
    if (wide) {
      for (const m of t.machines) {
        rows.push([
          t.tenant,
          String(m.index),
          m.id,
          m.name,
          m.state,
          m.region,
          m.image,
          m.volumes.join(",") || "-",
          m.private_ip,
        ]);
      }
    } else {
      const count = (xs: string[]) => {
        const c = new Map<string, number>();
        for (const x of xs) c.set(x, (c.get(x) ?? 0) + 1);
        return [...c].map(([k, n]) => (c.size === 1 ? k : `${k}:${n}`)).join(",");
      };
      rows.push([
        t.tenant,
        String(t.machines.length),
        count(t.machines.map((m) => m.state)),
        [...new Set(t.machines.map((m) => m.region))].join(","),
        [...new Set(t.machines.map((m) => m.image))].join(","),
      ]);
    }
  }
  if (rows.length === 1) return "no tenants";
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i])).join("  ").trimEnd()).join("\n");
}

/** One usage fact (the README's shape, consumed by metering adapters). */
export interface UsageFact {
  machine_id: string;
  state: string;
  region: string;
  instance_id: string;
  started_at: string | null;
  stopped_at: string | null;
  deleted_at: string | null;
  metadata: Record<string, string>;
  volumes: Array<{ volume_id: string; size_gib: number | null }>;
}

const iso = (ms: number | undefined) => (ms === undefined ? null : new Date(ms).toISOString());

/**
 * Usage facts from machine events: `started_at` is the latest start,
 * `stopped_at` the latest stop or suspend after it (null while running),
 * `deleted_at` the destroy. Destroyed machines are included. A suspended
 * machine does not run (its memory waits in a snapshot until the next start
 * resumes it), so for usage a suspend ends a running period as a stop does.
 */
export function usageFact(
  m: Machine,
  events: MachineEvent[],
  volumes: Map<string, Volume>,
): UsageFact {
  let started: number | undefined;
  let stopped: number | undefined;
  let destroyed: number | undefined;
  for (const e of events) {
    const t = e.timestamp;
    if (e.status === "started") {
      if (started === undefined || t > started) started = t;
    } else if (e.status === "stopped" || e.status === "suspended") {
      if (stopped === undefined || t > stopped) stopped = t;
    } else if (e.status === "destroyed") {
      if (destroyed === undefined || t > destroyed) destroyed = t;
    }
  }
  if (stopped !== undefined && started !== undefined && stopped < started) stopped = undefined;
  let deletedAt = iso(destroyed);
  if (deletedAt === null && m.state === "destroyed") deletedAt = m.updated_at ?? null;
  return {
    machine_id: m.id,
    state: m.state,
    region: m.region ?? "",
    instance_id: m.instance_id ?? "",
    started_at: iso(started),
    stopped_at: iso(stopped),
    deleted_at: deletedAt,
    metadata: m.config?.metadata ?? {},
    volumes: (m.config?.mounts ?? []).flatMap((mount) =>
      mount.volume
        ? [{
          volume_id: mount.volume,
          size_gib: volumes.get(mount.volume)?.size_gb ?? mount.size_gb ?? null,
        }]
        : []
    ),
  };
}

/** The usage facts of one tenant or of all tenants (machines without a tenant are skipped). */
export async function usageFacts(client: FlyClient, tenant?: string): Promise<UsageFact[]> {
  if (tenant !== undefined) checkTenantId(tenant);
  const [machines, volumeList] = await Promise.all([
    client.listMachines({
      includeDeleted: true,
      ...(tenant !== undefined ? { metadata: { [TENANT_KEY]: tenant } } : {}),
    }),
    client.listVolumes(),
  ]);
  const volumes = new Map(volumeList.map((v) => [v.id, v]));
  const mine = machines.filter((m) => tenantOf(m) !== undefined);
  // Lists normally embed events; fetch them (a few at a time) only when they do not.
  const missing = mine.filter((m) => !m.events);
  const fetched = new Map<string, MachineEvent[]>();
  await pool(missing, 8, async (m) => {
    fetched.set(m.id, await client.machineEvents(m.id, 50));
  });
  return mine.map((m) => usageFact(m, m.events ?? fetched.get(m.id) ?? [], volumes));
}

/** Runs `fn` over `items`, at most `limit` at once. */
export async function pool<T>(items: T[], limit: number, fn: (item: T) => Promise<void>) {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await fn(items[next++]);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

/** What `tenant delete` did. */
export interface DeleteResult {
  tenant: string;
  machinesDestroyed: string[];
  volumesDeleted: string[];
}

/**
 * Stops and destroys a tenant's machines, then deletes the volumes they
 * mounted. Machines already destroyed still name their volumes, so a re-run
 * after a partial failure finishes the job.
 */
export async function deleteTenant(
  client: FlyClient,
  tenant: string,
  opts: {
    log?: Log;
    /** Volume names the tenant's template gives (finds volumes no machine ever mounted). */
    volumeNames?: string[];
  } = {},
): Promise<DeleteResult> {
  checkTenantId(tenant);
  const log = opts.log ?? (() => {});
  const result: DeleteResult = { tenant, machinesDestroyed: [], volumesDeleted: [] };
  const machines = await client.listMachines({
    metadata: { [TENANT_KEY]: tenant },
    includeDeleted: true,
  });
  const volumeIds = new Set<string>();
  const volumeNames = new Set<string>(opts.volumeNames ?? []);
  for (const m of machines) {
    for (const mount of m.config?.mounts ?? []) {
      if (mount.volume) volumeIds.add(mount.volume);
      if (mount.name) volumeNames.add(mount.name);
    }
  }
  for (const m of machines) {
    if (m.state === "destroyed") continue;
    try {
      if (m.state === "started" || m.state === "starting") {
        log(`stopping ${m.id} (${m.name})`);
        await client.stopMachine(m.id, { signal: "SIGTERM", timeout: "30s" });
        await client.waitMachine(m.id, {
          state: "stopped",
          timeoutSec: 60,
          instanceId: m.instance_id,
        });
      }
      log(`destroying ${m.id}`);
      await client.deleteMachine(m.id, { force: true });
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
    result.machinesDestroyed.push(m.id);
  }
  // Volumes with this tenant's names that no machine holds: duplicates from lost replies, and
  // (given the template) volumes of a create that stopped before their machine.
  for (const v of await client.listVolumes()) {
    if (live(v) && volumeNames.has(v.name) && !v.attached_machine_id) volumeIds.add(v.id);
  }
  for (const id of volumeIds) {
    try {
      const v = await client.getVolume(id);
      if (!live(v)) continue;
      log(`deleting volume ${id} (${v.name})`);
      await client.deleteVolume(id);
      result.volumesDeleted.push(id);
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
  }
  return result;
}

/** What `tenant update-image` did (or would do, with dry-run). */
export interface UpdateSummary {
  image: string;
  updated: string[];
  unchanged: string[];
  failed: { machine: string; error: string } | null;
  not_attempted: string[];
  dry_run: boolean;
}

/**
 * Moves machines to `image` one at a time, waiting until each is started
 * again (stopped machines are updated but stay stopped), and stops at the
 * first failure.
 */
export async function updateImage(
  client: FlyClient,
  opts: { image: string; tenant?: string; dryRun?: boolean; log?: Log },
): Promise<UpdateSummary> {
  const log = opts.log ?? (() => {});
  if (opts.tenant !== undefined) checkTenantId(opts.tenant);
  const machines = (await client.listMachines(
    opts.tenant !== undefined ? { metadata: { [TENANT_KEY]: opts.tenant } } : {},
  )).filter((m) => tenantOf(m) !== undefined && m.state !== "destroyed")
    .sort((a, b) => tenantOf(a)!.localeCompare(tenantOf(b)!) || indexOf(a) - indexOf(b));
  const summary: UpdateSummary = {
    image: opts.image,
    updated: [],
    unchanged: [],
    failed: null,
    not_attempted: [],
    dry_run: !!opts.dryRun,
  };
  for (let i = 0; i < machines.length; i++) {
    const listed = machines[i];
    if (listed.config?.image === opts.image) {
      summary.unchanged.push(listed.id);
      continue;
    }
    if (opts.dryRun) {
      summary.not_attempted.push(listed.id);
      continue;
    }
    try {
      const m = await client.getMachine(listed.id);
      // A suspended vault counts as not running: the new image discards its memory snapshot
      // anyway, and vault-proxy starts it on the next connect, so it need not run (and bill)
      // until then.
      const wasRunning = m.state === "started" || m.state === "starting";
      log(`updating ${m.id} (${tenantOf(m)} #${indexOf(m)}) to ${opts.image}`);
      const updated = await client.updateMachine(m.id, {
        config: { ...(m.config as Record<string, unknown>), image: opts.image },
        ...(wasRunning ? {} : { skip_launch: true }),
      });
      if (wasRunning) {
        await client.waitMachine(m.id, {
          state: "started",
          timeoutSec: 60,
          instanceId: updated.instance_id,
        });
      }
      summary.updated.push(m.id);
    } catch (err) {
      summary.failed = { machine: listed.id, error: (err as Error).message };
      summary.not_attempted.push(...machines.slice(i + 1).map((m) => m.id));
      break;
    }
  }
  return summary;
}
