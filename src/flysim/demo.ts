/**
 * The demo behind `npm start` and `npm run sim`: the deployment of
 * docs/deploy.md, on this machine. flysim stands in for Fly (Machines API,
 * the org's OIDC issuer, each machine's token socket); the real admin code
 * runs `tenant create demo --template examples/tenant.template.toml` against
 * it; vault-proxy sits in front; the real client reaches the machine through
 * the proxy by machine id, attests, pins, authenticates and provisions.
 *
 * State lives outside the repo and persists between runs. flysim forgets its
 * machines when it stops, but the demo keeps the tenant's volume record, so
 * the next run's `tenant create` finds the volume by name and the new machine
 * mounts it (rootfs, /root and /home kept), as on Fly after a machine is
 * destroyed and created again. One demo runs per state directory: a lock
 * file names its pid, and other `npm start` runs use it instead of starting
 * a second one.
 *
 * @module
 */
import { join } from "node:path";
import { homedir } from "node:os";
import { fileURLToPath } from "node:url";
import { z } from "zod";
import { VaultError } from "../errors/mod.ts";
import { createFlyClient, createTenant, renderTemplate } from "../admin/mod.ts";
import { machinesApiResolver, type Proxy, startProxy } from "../proxy/mod.ts";
import { TRUST_ENV_VARS } from "../transport/mod.ts";
import { type Flysim, startFlysim } from "./sim.ts";
import { buildHostRootfsTarball } from "./host_rootfs.ts";
import type { SimVolume } from "./machines_api.ts";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
/** The template the demo's tenant is created from (the README's, unchanged). */
export const DEMO_TEMPLATE = join(ROOT, "examples", "tenant.template.toml");
const TENANT = "demo";
const ORG = "demo-org";

/** The demo's state directory: `$FLY_VAULT_DEMO_DIR`, else `~/.local/state/fly-vault-demo`. */
export function demoStateDir(): string {
  const explicit = Deno.env.get("FLY_VAULT_DEMO_DIR");
  if (explicit) return explicit;
  const state = Deno.env.get("XDG_STATE_HOME") || join(homedir(), ".local", "state");
  return join(state, "fly-vault-demo");
}

const VolumeRecord = z.object({
  id: z.string().regex(/^vol_[A-Za-z0-9]+$/),
  app: z.string(),
  name: z.string(),
  size_gb: z.number(),
  region: z.string(),
  zone: z.string(),
  encrypted: z.boolean(),
  created_at: z.string(),
  dir: z.string(),
});

const DemoStateSchema = z.object({
  version: z.literal(2),
  access_token: z.string().min(16),
  /** The tenant's volumes as flysim last knew them (restored before `tenant create`). */
  volumes: z.array(VolumeRecord).default([]),
});
type DemoState = z.infer<typeof DemoStateSchema>;

function randomHex(bytes: number): string {
  return Array.from(
    crypto.getRandomValues(new Uint8Array(bytes)),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("");
}

async function writePrivate(path: string, text: string): Promise<void> {
  const tmp = `${path}.${randomHex(4)}.tmp`;
  await Deno.writeTextFile(tmp, text, { mode: 0o600 });
  await Deno.rename(tmp, path);
}

async function loadState(dir: string): Promise<DemoState> {
  const file = join(dir, "demo.json");
  let raw: Record<string, unknown> | undefined;
  try {
    raw = JSON.parse(await Deno.readTextFile(file));
  } catch { /* first run */ }
  const parsed = DemoStateSchema.safeParse(raw);
  if (parsed.success) return parsed.data;
  const state: DemoState = { version: 2, access_token: randomHex(24), volumes: [] };
  // A state dir from the earlier demo (one machine, no Machines API): keep its volume.
  if (raw && typeof raw.machine_id === "string" && typeof raw.access_token === "string") {
    state.access_token = raw.access_token;
    const old = join(dir, "volumes", raw.machine_id);
    if (await Deno.stat(old).then(() => true, () => false)) {
      state.volumes.push({
        id: `vol_${randomHex(8)}`,
        app: "vault-tenants",
        name: `tvol_${TENANT}_1`,
        size_gb: 1,
        region: "ord",
        zone: "ord-demo",
        encrypted: true,
        created_at: new Date().toISOString(),
        dir: old,
      });
    }
  }
  await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
  await writePrivate(file, JSON.stringify(state, null, 2));
  return state;
}

/** The pid of the demo running on this state dir, if one is. */
export async function runningDemo(stateDir = demoStateDir()): Promise<number | undefined> {
  const text = await Deno.readTextFile(join(stateDir, "demo.pid")).catch(() => "");
  const pid = Number(text.trim());
  if (!Number.isInteger(pid) || pid <= 0 || pid === Deno.pid) return undefined;
  // Alive and still a demo (not a recycled pid).
  const cmdline = await Deno.readTextFile(`/proc/${pid}/cmdline`).catch(() => "");
  return cmdline.includes("demo.ts") ? pid : undefined;
}

async function takeLock(stateDir: string): Promise<() => Promise<void>> {
  const path = join(stateDir, "demo.pid");
  for (let attempt = 0; attempt < 3; attempt++) {
    const other = await runningDemo(stateDir);
    if (other) throw alreadyRunning(other);
    try {
      const f = await Deno.open(path, { createNew: true, write: true, mode: 0o600 });
      await f.write(new TextEncoder().encode(`${Deno.pid}\n`));
      f.close();
      return async () => {
        const mine = await Deno.readTextFile(path).catch(() => "");
        if (mine.trim() === String(Deno.pid)) await Deno.remove(path).catch(() => {});
      };
    } catch (err) {
      if (!(err instanceof Deno.errors.AlreadyExists)) throw err;
      // A stale lock (its demo is gone): remove it and try again.
      if (!(await runningDemo(stateDir))) await Deno.remove(path).catch(() => {});
    }
  }
  throw new VaultError("demo.lock", `cannot take ${path}`, "remove it if no demo is running");
}

/** The error for a second demo on one state dir. */
export function alreadyRunning(pid: number): VaultError {
  return new VaultError(
    "demo.running",
    `the demo is already running (pid ${pid})`,
    `use it from here: \`npm start\` (a console) or \`npm start -- exec demo -- CMD\`; ` +
      `to stop it, press Ctrl-C where it runs (or kill ${pid})`,
  );
}

/** `npm run demo:reset`: deletes the state dir, unless a demo is using it. */
export async function resetDemo(stateDir = demoStateDir()): Promise<void> {
  const pid = await runningDemo(stateDir);
  if (pid) {
    throw new VaultError(
      "demo.running",
      `the demo is running (pid ${pid}); not deleting its state`,
      `stop it first (Ctrl-C where it runs, or kill ${pid}), then run npm run demo:reset again`,
    );
  }
  await Deno.remove(stateDir, { recursive: true }).catch((err) => {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  });
}

/** A demo to run client commands against: one this process started, or one already running. */
export interface Demo {
  stateDir: string;
  configDir: string;
  /** The pid of the demo that owns flysim (this process when it started it). */
  ownerPid: number;
  /** Runs the real fly-vault CLI against the demo config. */
  client(
    args: string[],
    opts?: {
      stdin?: "inherit" | "null";
      stdout?: "inherit" | "piped" | "stderr";
      stderr?: "inherit" | "null";
    },
  ): Promise<{ code: number; stdout: string }>;
  close(): Promise<void>;
}

const isTty = () => Deno.stderr.isTerminal() && !Deno.env.get("NO_COLOR");
const dim = (s: string) => isTty() ? `\x1b[2m${s}\x1b[0m` : s;

/** One line of what the demo does, on stderr (stdout stays the commands'). */
export function note(s: string): void {
  console.error(dim(`demo: ${s}`));
}

function clientRunner(configDir: string): Demo["client"] {
  // The demo's issuer is plain HTTP on loopback: no extra CA is ever needed, and the client
  // refuses to dial with one in its trust store (src/transport/trust_env.ts).
  const env = Deno.env.toObject();
  for (const name of TRUST_ENV_VARS) delete env[name];
  return async (args, o = {}) => {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--quiet", join(ROOT, "bin", "fly-vault.ts"), ...args],
      env: { ...env, FLY_VAULT_CONFIG_DIR: configDir },
      clearEnv: true,
      stdin: o.stdin ?? "inherit",
      stdout: o.stdout === "stderr" ? "piped" : o.stdout ?? "inherit",
      stderr: o.stderr ?? "inherit",
    }).spawn();
    const out = o.stdout === "piped"
      ? new Response(child.stdout).text()
      : o.stdout === "stderr"
      ? child.stdout.pipeTo(Deno.stderr.writable, { preventClose: true }).then(() => "")
      : Promise.resolve("");
    const [status, stdout] = await Promise.all([child.status, out]);
    return { code: status.code, stdout };
  };
}

/**
 * Uses the demo another process runs on this state dir, once it is ready
 * (it may still be creating its tenant): waits at most `timeoutMs`.
 */
export async function joinDemo(stateDir: string, pid: number, timeoutMs = 60_000): Promise<Demo> {
  const configDir = join(stateDir, "client");
  const ready = join(stateDir, "demo.ready");
  const deadline = Date.now() + timeoutMs;
  while ((await Deno.readTextFile(ready).catch(() => "")).trim() !== String(pid)) {
    if (Date.now() > deadline || !(await runningDemo(stateDir))) {
      throw new VaultError(
        "demo.not_ready",
        `the demo (pid ${pid}) did not become ready`,
        "look at the terminal where it runs; Ctrl-C there and start again if it is stuck",
      );
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  return {
    stateDir,
    configDir,
    ownerPid: pid,
    client: clientRunner(configDir),
    async close() {},
  };
}

/**
 * Starts the demo: flysim, the tenant (created through the Machines API by
 * the real admin code), vault-proxy, and the client's config. Throws
 * `demo.running` when another demo runs on the state dir.
 */
export async function startDemo(): Promise<Demo> {
  const stateDir = demoStateDir();
  await Deno.mkdir(stateDir, { recursive: true, mode: 0o700 });
  const unlock = await takeLock(stateDir);
  let sim: Flysim | undefined;
  let proxy: Proxy | undefined;
  let configured = false;
  const close = async () => {
    await Deno.remove(join(stateDir, "demo.ready")).catch(() => {});
    // A master left by `npm start -- exec …` would idle out its persist time against a vault
    // that is gone (the next run's ports differ, so it is never used again): end it now.
    if (configured) {
      await clientRunner(join(stateDir, "client"))(["master", TENANT, "--stop"], {
        stdin: "null",
        stdout: "piped",
        stderr: "null",
      }).catch(() => {});
    }
    await proxy?.close();
    await sim?.close();
    await unlock();
  };
  try {
    const state = await loadState(stateDir);
    const tarball = join(stateDir, "rootfs", "demo-rootfs.tar.gz");
    if (!(await Deno.stat(tarball).then(() => true, () => false))) {
      note("first run: packing a small rootfs from this machine's own programs");
      await buildHostRootfsTarball(tarball);
    }
    // Last run's machines are gone (we hold the lock): their sockets and files need not stay.
    await Deno.remove(join(stateDir, "flysim", "run"), { recursive: true }).catch(() => {});
    const apiToken = randomHex(24);
    sim = await startFlysim({ stateDir: join(stateDir, "flysim"), apiToken, org: ORG });
    note(`flysim up: Machines API ${sim.api.baseUrl}, OIDC issuer ${sim.issuer.baseUrl}/${ORG}`);

    // The volume outlives flysim's memory of it: put it back before create looks for it.
    for (const v of state.volumes) {
      if (!(await Deno.stat(v.dir).then((s) => s.isDirectory, () => false))) continue;
      sim.api.state.volumes.set(
        v.id,
        {
          ...v,
          state: "created",
          attached_machine_id: null,
        } satisfies SimVolume,
      );
    }
    const template = await Deno.readTextFile(DEMO_TEMPLATE);
    const plan = renderTemplate(
      template,
      { tenantId: TENANT, accessToken: state.access_token },
      "examples/tenant.template.toml",
    );
    const admin = createFlyClient({
      apiBase: sim.api.baseUrl,
      token: apiToken,
      app: plan.app ?? "vault-tenants",
      deadlineMs: 60_000,
    });
    note(`fly-vault-admin tenant create ${TENANT} --template examples/tenant.template.toml`);
    const created = await createTenant(admin, plan);
    const machine = created.machines[0];
    const volumeId = [...sim.api.state.volumes.values()]
      .find((v) => v.attached_machine_id === machine.id)?.id;
    note(
      `tenant ${TENANT} created: machine ${machine.id} (${machine.name}, ${machine.state}), ` +
        `volume ${volumeId} (${created.volumesCreated.length ? "new" : "kept from the last run"})`,
    );
    state.volumes = [...sim.api.state.volumes.values()]
      .filter((v) => v.state !== "destroyed" && v.name.startsWith(`tvol_${TENANT}_`))
      .map((v) => VolumeRecord.parse(v));
    await writePrivate(join(stateDir, "demo.json"), JSON.stringify(state, null, 2));

    proxy = await startProxy({
      listen: { hostname: "127.0.0.1", port: 0 },
      resolver: machinesApiResolver({ url: sim.api.baseUrl, app: admin.app, token: apiToken }),
      log: () => {},
    });
    note(`vault-proxy on 127.0.0.1:${proxy.port} (finds machines by id through the Machines API)`);

    const configDir = join(stateDir, "client");
    await Deno.mkdir(configDir, { recursive: true, mode: 0o700 });
    await writePrivate(
      join(configDir, "config.toml"),
      `# Written by the fly-vault demo (npm start); ports change each run.
# The client reaches the machine through vault-proxy, which routes by machine_id.
[vault.${TENANT}]
address = "127.0.0.1:${proxy.port}"
org = "${ORG}"
app = "${admin.app}"
machine_id = "${machine.id}"
access_token = "${state.access_token}"
rootfs = "${tarball}"
oidc_issuer = "${sim.issuer.baseUrl}"
local_simulation = true
`,
    );
    configured = true;
    // Other `npm start`s join once this exists (the config above is complete by then).
    await writePrivate(join(stateDir, "demo.ready"), `${Deno.pid}\n`);
    return { stateDir, configDir, ownerPid: Deno.pid, client: clientRunner(configDir), close };
  } catch (err) {
    await close();
    throw err;
  }
}

/**
 * Attests through the proxy (printing what was checked) and provisions the
 * vault when it has no rootfs. Returns false when either failed (the client
 * has printed why).
 */
export async function ensureProvisioned(demo: Demo): Promise<boolean> {
  const st = await demo.client(["status", "--json", TENANT], { stdin: "null", stdout: "piped" });
  if (st.code !== 0) return false;
  const status = JSON.parse(st.stdout) as {
    machine_id: string;
    attested_now: boolean;
    state: string;
  };
  note(
    status.attested_now
      ? `attested machine ${status.machine_id} through the proxy (Fly OIDC token bound to its ` +
        `TLS key) and pinned its key; vault is ${status.state}`
      : `machine ${status.machine_id} through the proxy, its key pinned by an earlier ` +
        `attestation; vault is ${status.state}`,
  );
  if (status.state === "ready") return true;
  const tarball = join(demo.stateDir, "rootfs", "demo-rootfs.tar.gz");
  const size = await Deno.stat(tarball).then((s) => s.size, () => 0);
  note(`provisioning: uploading the rootfs (${(size / 1e6).toFixed(1)} MB), verify, swap`);
  // --reprovision without a terminal provisions and returns (no console).
  // On a terminal its progress bars redraw in place; otherwise its report goes to stderr with
  // ours, so that stdout stays the user's command's alone.
  const r = await demo.client(["connect", "--reprovision", TENANT], {
    stdin: "null",
    stdout: Deno.stdout.isTerminal() ? "inherit" : "stderr",
  });
  return r.code === 0;
}

/** `npm start` without arguments: a console in the vault (or one command when stdin is no terminal). */
export async function runTour(demo: Demo): Promise<number> {
  if (!(await ensureProvisioned(demo))) return 1;
  if (!Deno.stdin.isTerminal()) {
    note("stdin is not a terminal: running `fly-vault exec demo -- uname -a` instead of a console");
    return (await demo.client(["exec", TENANT, "--", "uname", "-a"], { stdin: "null" })).code;
  }
  const owner = demo.ownerPid === Deno.pid;
  note(
    `console (exit or ~. to leave; ~? for help)${
      owner ? "" : `; the session stays while the demo (pid ${demo.ownerPid}) runs`
    }`,
  );
  const { code } = await demo.client(["connect", TENANT]);
  if (owner) {
    note("stopped; the volume is kept for the next npm start");
    note("to keep the vault (and consoles left with ~.) up between runs: `npm run sim` elsewhere");
  }
  return code;
}
