/**
 * flysim's Fly Machines API: the REST surface the admin uses (machines,
 * volumes, events, wait), served on loopback with bearer auth and replies in
 * Fly's shapes (`tests/fixtures/fly-machines-openapi.json`). Machines
 * really run: each start calls a launcher (the real one runs init with the
 * volume's directory as /data). Tests can inject faults (429 with
 * Retry-After, 500, slow replies, dropped connections, before or after the
 * request took effect) to prove the admin's retries and idempotency.
 *
 * Suspend and resume as Fly's: `POST …/suspend` (or the machine's own token
 * socket, no API token) freezes the machine's process tree with its memory
 * (`suspending` → `suspended`); `POST …/start` of a suspended machine thaws
 * it (`starting` → `started`): consoles, shells and programs carry on where
 * they were. Starting a stopped machine boots it afresh. A `fail-start`
 * fault makes the next start fail (`failed`), as a host that cannot run it.
 *
 * @module
 */
import type { MachineLaunch } from "./runner.ts";
import { join } from "node:path";
import { timingSafeEqual } from "node:crypto";

/** What a machine is started with: the runner's launch, less the address flysim allocates. */
export type SimMachineLaunch = Omit<MachineLaunch, "privateIp">;

/** A running machine as a launcher reports it. */
export interface SimLaunched {
  stop(signal?: Deno.Signal): Promise<void>;
  exited: Promise<number | null>;
  privateIp?: string;
  /** Freezes the machine with its memory (suspend); without it the machine cannot suspend. */
  freeze?(): Promise<void>;
  /** Thaws a frozen machine (resume). */
  thaw?(): Promise<void>;
}

/** Starts machines: the runner's `createInitLauncher` fits, so does {@link fakeLauncher}. */
export interface SimLauncher {
  start(machine: SimMachineLaunch): Promise<SimLaunched>;
}

/** A `MachineEvent` as stored (oldest first). */
export interface SimEvent {
  id: string;
  type: string;
  status: string;
  source: string;
  timestamp: number;
  request?: Record<string, unknown>;
}

/** A machine as flysim records it. */
export interface SimMachine {
  id: string;
  app: string;
  name: string;
  state: string;
  region: string;
  instance_id: string;
  private_ip: string;
  config: Record<string, unknown> & {
    image: string;
    env?: Record<string, string>;
    metadata?: Record<string, string>;
    mounts?: Array<Record<string, unknown> & { volume: string; path: string }>;
  };
  events: SimEvent[];
  created_at: string;
  updated_at: string;
  /** The running process, when started. */
  process?: SimLaunched;
}

/** A volume as flysim records it. */
export interface SimVolume {
  id: string;
  app: string;
  name: string;
  state: string;
  size_gb: number;
  region: string;
  zone: string;
  encrypted: boolean;
  attached_machine_id: string | null;
  created_at: string;
  /** The directory standing in for the volume. */
  dir: string;
}

/** A fault to inject. */
export interface Fault {
  match: { method?: string; pathRegex?: RegExp | string };
  /** Fire on the nth matching request (1-based; default 1). */
  nth?: number;
  /** How many times to fire from the nth on (default 1). */
  times?: number;
  /**
   * `429`/`500`: refuse without acting. `500-after`: act, then reply 500.
   * `drop`: break the connection without acting; `drop-after`: act, then break it.
   * `slow`: wait `delayMs` (default 2000), then act normally.
   * `fail-start`: accept a start (200), then the machine fails to start or resume (`failed`).
   */
  kind: "429" | "500" | "500-after" | "drop" | "drop-after" | "slow" | "fail-start";
  /** Retry-After seconds for `429`. */
  retryAfter?: number;
  delayMs?: number;
  /** Matching requests seen so far, and how often it fired (maintained by flysim). */
  seen?: number;
  fired?: number;
}

/** A request flysim served (for shape assertions). */
export interface SimRequest {
  method: string;
  path: string;
  query: Record<string, string>;
  body: unknown;
}

/** A running Machines API. */
export interface MachinesApi {
  baseUrl: string;
  state: { machines: Map<string, SimMachine>; volumes: Map<string, SimVolume> };
  /** Push faults here; each fires when its match and nth say. */
  faults: Fault[];
  /** The last requests served (at most 20,000). */
  requests: SimRequest[];
  /** Inserts a machine record as is, without running it (bench seeding). */
  insertMachine(m: SimMachine): void;
  close(): Promise<void>;
}

/** Options of {@link startMachinesApi}. */
export interface MachinesApiOptions {
  hostname?: string;
  port?: number;
  /** The API token clients must send as a bearer. */
  token: string;
  launcher: SimLauncher;
  /** Volumes' directories go under `dataDir/volumes`. */
  dataDir: string;
  org?: string;
}

const STATES_WAITABLE = ["started", "stopped", "suspended", "destroyed", "failed", "settled"];

function hex(bytes: number): string {
  return Array.from(
    crypto.getRandomValues(new Uint8Array(bytes)),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("");
}

const ULID_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
function ulid(): string {
  let out = "";
  let t = Date.now();
  for (let i = 0; i < 10; i++) {
    out = ULID_ALPHABET[t % 32] + out;
    t = Math.floor(t / 32);
  }
  for (const b of crypto.getRandomValues(new Uint8Array(16))) out += ULID_ALPHABET[b % 32];
  return out;
}

function json(body: unknown, status = 200, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json; charset=utf-8", ...headers },
  });
}

/** Fly's `ErrorResponse`. */
function flyError(status: number, error: string, headers: Record<string, string> = {}): Response {
  return json({ error }, status, headers);
}

/**
 * A reply whose body breaks off: it promises more bytes than it sends, so the
 * connection closes mid-body and the client sees a reset (as when a proxy
 * drops it), without the server logging an error.
 */
function dropped(): Response {
  return new Response(
    new ReadableStream({
      start(controller) {
        controller.enqueue(new TextEncoder().encode("{"));
        controller.close();
      },
    }),
    { status: 200, headers: { "content-type": "application/json", "content-length": "4096" } },
  );
}

/** The machine as Fly's `Machine` reply. */
export function machineView(m: SimMachine, summary = false): Record<string, unknown> {
  const [repository, tag = "latest"] = splitImage(m.config.image);
  const view: Record<string, unknown> = {
    id: m.id,
    name: m.name,
    state: m.state,
    region: m.region,
    instance_id: m.instance_id,
    private_ip: m.private_ip,
    image_ref: { registry: repository.split("/")[0], repository, tag, digest: "", labels: {} },
    host_status: "ok",
    created_at: m.created_at,
    updated_at: m.updated_at,
  };
  if (!summary) {
    view.config = m.config;
    const events = new Array(m.events.length);
    for (let i = 0; i < m.events.length; i++) events[i] = m.events[m.events.length - 1 - i];
    view.events = events;
  }
  return view;
}

function splitImage(image: string): [string, string?] {
  const slash = image.lastIndexOf("/");
  const colon = image.lastIndexOf(":");
  return colon > slash ? [image.slice(0, colon), image.slice(colon + 1)] : [image];
}

/** The volume as Fly's `Volume` reply. */
export function volumeView(v: SimVolume): Record<string, unknown> {
  return {
    id: v.id,
    name: v.name,
    state: v.state,
    size_gb: v.size_gb,
    region: v.region,
    zone: v.zone,
    encrypted: v.encrypted,
    fstype: "ext4",
    attached_machine_id: v.attached_machine_id,
    attached_alloc_id: v.attached_machine_id,
    created_at: v.created_at,
    snapshot_retention: 5,
    auto_backup_enabled: true,
    host_status: "ok",
    type: "local",
  };
}

/** Starts flysim's Machines API on loopback. */
export function startMachinesApi(opts: MachinesApiOptions): MachinesApi {
  const machines = new Map<string, SimMachine>();
  const volumes = new Map<string, SimVolume>();
  const faults: Fault[] = [];
  const requests: SimRequest[] = [];
  const waiters = new Map<string, Set<() => void>>();
  const tokenBytes = new TextEncoder().encode(`Bearer ${opts.token}`);
  const org = opts.org ?? "personal";
  const pending = new Set<Promise<unknown>>();
  const closing = new AbortController();

  const track = <T>(p: Promise<T>): Promise<T> => {
    pending.add(p);
    p.finally(() => pending.delete(p)).catch(() => {});
    return p;
  };

  function notify(id: string) {
    for (const wake of waiters.get(id) ?? []) wake();
  }

  function transition(
    m: SimMachine,
    state: string,
    type: string,
    source = "flyd",
    request?: Record<string, unknown>,
  ) {
    m.state = state;
    m.updated_at = new Date().toISOString();
    m.events.push({
      id: ulid(),
      type,
      status: state,
      source,
      timestamp: Date.now(),
      ...(request ? { request } : {}),
    });
    // Fly keeps a bounded history; so do we.
    if (m.events.length > 50) m.events.splice(0, m.events.length - 50);
    notify(m.id);
  }

  async function launch(m: SimMachine, source: string, fail = false) {
    transition(m, "starting", "start", source);
    if (fail) {
      transition(m, "failed", "start", "flyd", {
        error: "failed to start machine: could not allocate resources on host (injected)",
      });
      return;
    }
    const mount = m.config.mounts?.[0];
    const volume = mount ? volumes.get(mount.volume) : undefined;
    try {
      const proc = await opts.launcher.start({
        id: m.id,
        name: m.name,
        app: m.app,
        org,
        region: m.region,
        image: m.config.image,
        env: { ...(m.config.env ?? {}) },
        volumeDir: volume?.dir,
        ...(mount ? { mountPath: mount.path } : {}),
        version: m.instance_id,
        suspend: () => selfSuspend(m),
      });
      if (m.state !== "starting") {
        // Destroyed or stopped while starting: do not leave the process behind.
        await proc.stop("SIGKILL");
        return;
      }
      m.process = proc;
      if (proc.privateIp) m.private_ip = proc.privateIp;
      transition(m, "started", "start", "flyd");
      const instance = m.instance_id;
      proc.exited.then((code) => {
        if (m.process !== proc) return;
        m.process = undefined;
        if ((m.state === "started" || m.state === "suspended") && m.instance_id === instance) {
          transition(m, "stopped", "exit", "flyd", {
            exit_event: { exit_code: code ?? -1, requested_stop: false },
          });
        }
      });
    } catch (err) {
      transition(m, "failed", "start", "flyd", { error: String(err) });
    }
  }

  async function halt(m: SimMachine, signal: Deno.Signal, source: string) {
    const busy = ["starting", "suspending"];
    if (busy.includes(m.state)) await waitFor(m, (x) => !busy.includes(x.state), 60_000);
    // A suspended machine stops as a started one: its snapshot is dropped (the process thaws
    // in stop() so init ends cleanly).
    if (m.state !== "started" && m.state !== "suspended") return;
    transition(m, "stopping", "stop", source);
    const proc = m.process;
    m.process = undefined;
    await proc?.stop(signal);
    transition(m, "stopped", "exit", "flyd", {
      exit_event: { requested_stop: true, signal: signal },
    });
  }

  /**
   * Freezes a started machine with its memory: `suspending`, then `suspended`
   * once every process is frozen. 412 for a machine in another state.
   */
  async function suspend(
    m: SimMachine,
    source: string,
  ): Promise<{ status: number; body: unknown }> {
    if (m.state === "starting") await waitFor(m, (x) => x.state !== "starting", 60_000);
    if (m.state === "suspending") await waitFor(m, (x) => x.state !== "suspending", 60_000);
    if (m.state === "suspended") return { status: 200, body: { ok: true } };
    const proc = m.process;
    if (m.state !== "started" || !proc) {
      return {
        status: 412,
        body: { error: `failed_precondition: machine is ${m.state}, only a started one suspends` },
      };
    }
    if (!proc.freeze || !proc.thaw) {
      return { status: 412, body: { error: "failed_precondition: machine cannot be suspended" } };
    }
    transition(m, "suspending", "suspend", source);
    try {
      await proc.freeze();
    } catch (err) {
      // Whatever froze carries on: the machine is still started.
      await proc.thaw().catch(() => {});
      transition(m, "started", "suspend", "flyd", { error: String(err) });
      return { status: 500, body: { error: `suspend failed: ${String(err)}` } };
    }
    if (m.process !== proc) return { status: 200, body: { ok: true } };
    transition(m, "suspended", "suspend", "flyd");
    return { status: 200, body: { ok: true } };
  }

  /** The machine's own token socket asking to suspend it (no API token, as on Fly). */
  function selfSuspend(m: SimMachine): Promise<{ status: number; body: unknown }> {
    return track(suspend(m, "user"));
  }

  /** Thaws a suspended machine: `starting`, then `started` with everything as it was. */
  async function resume(m: SimMachine, fail: boolean) {
    const proc = m.process;
    transition(m, "starting", "start", "user");
    if (fail || !proc?.thaw) {
      // The snapshot cannot be resumed and the host cannot boot it either.
      m.process = undefined;
      await proc?.stop("SIGKILL");
      transition(m, "failed", "start", "flyd", {
        error: "failed to resume machine from its snapshot (injected)",
      });
      return;
    }
    try {
      await proc.thaw();
    } catch (err) {
      m.process = undefined;
      await proc.stop("SIGKILL");
      transition(m, "failed", "start", "flyd", { error: `resume failed: ${String(err)}` });
      return;
    }
    if (m.process === proc && m.state === "starting") transition(m, "started", "start", "flyd");
  }

  function waitFor(
    m: SimMachine,
    ok: (m: SimMachine) => boolean,
    ms: number,
    signal?: AbortSignal,
  ): Promise<boolean> {
    if (ok(m)) return Promise.resolve(true);
    return new Promise((resolve) => {
      let set = waiters.get(m.id);
      if (!set) waiters.set(m.id, set = new Set());
      const done = (result: boolean) => {
        clearTimeout(timer);
        set!.delete(check);
        if (set!.size === 0) waiters.delete(m.id);
        signal?.removeEventListener("abort", abort);
        closing.signal.removeEventListener("abort", abort);
        resolve(result);
      };
      const check = () => ok(m) && done(true);
      // flysim closing ends every wait (no 60 s timers keep close() waiting).
      const abort = () => done(false);
      const timer = setTimeout(abort, ms);
      signal?.addEventListener("abort", abort);
      closing.signal.addEventListener("abort", abort);
      set.add(check);
    });
  }

  function authorized(req: Request): boolean {
    const got = new TextEncoder().encode(req.headers.get("authorization") ?? "");
    return got.length === tokenBytes.length && timingSafeEqual(got, tokenBytes);
  }

  function pickFault(method: string, path: string): Fault | undefined {
    // Every matching fault counts the request, so several faults can be staged on one sequence.
    let chosen: Fault | undefined;
    for (const f of faults) {
      if (f.match.method && f.match.method.toUpperCase() !== method) continue;
      if (f.match.pathRegex && !new RegExp(f.match.pathRegex).test(path)) continue;
      f.seen = (f.seen ?? 0) + 1;
      f.fired ??= 0;
      if (!chosen && f.seen >= (f.nth ?? 1) && f.fired < (f.times ?? 1)) {
        f.fired++;
        chosen = f;
      }
    }
    return chosen;
  }

  function findMachine(app: string, id: string): SimMachine | undefined {
    const m = machines.get(id);
    return m && m.app === app ? m : undefined;
  }

  function liveByName(app: string, name: string): SimMachine | undefined {
    for (const m of machines.values()) {
      if (m.app === app && m.name === name && m.state !== "destroyed") return m;
    }
    return undefined;
  }

  // deno-lint-ignore no-explicit-any
  type Body = any;

  async function route(
    method: string,
    parts: string[],
    query: URLSearchParams,
    body: Body,
    signal?: AbortSignal,
    failStart = false,
  ): Promise<Response> {
    // parts: ["v1", "apps", app, kind, id?, action?]
    if (parts[0] !== "v1" || parts[1] !== "apps" || !parts[2]) {
      return flyError(404, "not found");
    }
    const app = parts[2];
    const kind = parts[3];
    const id = parts[4];
    const action = parts[5];
    if (parts.length > 6) return flyError(404, "not found");

    if (kind === "machines" && id === undefined) {
      if (method === "GET") {
        const includeDeleted = query.get("include_deleted") === "true";
        const states = query.get("state")?.split(",").filter(Boolean);
        const region = query.get("region");
        const summary = query.get("summary") === "true";
        const meta: [string, string][] = [];
        for (const [k, v] of query) if (k.startsWith("metadata.")) meta.push([k.slice(9), v]);
        const out: unknown[] = [];
        for (const m of machines.values()) {
          if (m.app !== app) continue;
          if (!includeDeleted && m.state === "destroyed") continue;
          if (states && !states.includes(m.state)) continue;
          if (region && m.region !== region) continue;
          if (meta.some(([k, v]) => m.config.metadata?.[k] !== v)) continue;
          out.push(machineView(m, summary));
        }
        return json(out);
      }
      if (method === "POST") return createMachine(app, body);
      return flyError(405, "method not allowed");
    }
    if (kind === "machines") {
      const m = findMachine(app, id);
      if (!m) return flyError(404, "machine not found");
      if (action === undefined) {
        if (method === "GET") return json(machineView(m));
        if (method === "POST") return await updateMachine(m, body);
        if (method === "DELETE") {
          if (m.state === "destroyed") return flyError(404, "machine not found");
          if ((m.state === "started" || m.state === "starting") && query.get("force") !== "true") {
            return flyError(
              412,
              "failed_precondition: unable to destroy machine, not currently stopped",
            );
          }
          await halt(m, "SIGKILL", "user");
          transition(m, "destroying", "destroy", "user");
          for (const v of volumes.values()) {
            if (v.attached_machine_id === m.id) v.attached_machine_id = null;
          }
          transition(m, "destroyed", "destroy", "flyd");
          return json({ ok: true });
        }
        return flyError(405, "method not allowed");
      }
      if (m.state === "destroyed" && action !== "events" && action !== "wait") {
        return flyError(404, "machine not found");
      }
      if (action === "start" && method === "POST") {
        // A start while suspending resumes once the snapshot is taken.
        if (m.state === "suspending") await waitFor(m, (x) => x.state !== "suspending", 60_000);
        const previous = m.state;
        if (m.state === "stopped" || m.state === "created" || m.state === "failed") {
          track(launch(m, "user", failStart));
        } else if (m.state === "suspended") {
          await track(resume(m, failStart));
        }
        return json({ previous_state: previous });
      }
      if (action === "suspend" && method === "POST") {
        const r = await track(suspend(m, "user"));
        return json(r.body, r.status);
      }
      if (action === "stop" && method === "POST") {
        const signal = (body?.signal ?? "SIGINT") as Deno.Signal;
        await halt(m, signal, "user");
        return json({ ok: true });
      }
      if (action === "wait" && method === "GET") {
        const wanted = (query.getAll("state").join(",") || "started").split(",");
        for (const s of wanted) {
          if (!STATES_WAITABLE.includes(s)) return flyError(400, `invalid state ${s}`);
        }
        const instance = query.get("instance_id") ?? query.get("version");
        const timeoutSec = Math.min(60, Math.max(1, Number(query.get("timeout") ?? 60) || 60));
        const ok = await waitFor(
          m,
          (x) =>
            (!instance || x.instance_id === instance) &&
            (wanted.includes(x.state) ||
              (wanted.includes("settled") &&
                ["started", "stopped", "suspended", "failed"].includes(x.state))),
          timeoutSec * 1000,
          signal,
        );
        if (!ok) {
          return flyError(408, `deadline_exceeded: machine did not reach ${wanted.join(",")}`);
        }
        return json({ ok: true, state: m.state, version: m.instance_id });
      }
      if (action === "events" && method === "GET") {
        const limit = Math.min(50, Math.max(1, Number(query.get("limit") ?? 20) || 20));
        return json(m.events.slice(-limit).reverse());
      }
      return flyError(404, "not found");
    }
    if (kind === "volumes") {
      if (id === undefined) {
        if (method === "GET") {
          const out: unknown[] = [];
          for (const v of volumes.values()) {
            if (v.app === app && v.state !== "destroyed") out.push(volumeView(v));
          }
          return json(out);
        }
        if (method === "POST") {
          if (typeof body?.name !== "string" || !/^[A-Za-z0-9_]{1,30}$/.test(body.name)) {
            return flyError(
              400,
              "Volume name must consist of only letters, numbers and underscores, max 30 characters",
            );
          }
          if (typeof body.region !== "string" || body.region === "") {
            return flyError(400, "region is required");
          }
          const size = body.size_gb ?? 3;
          if (!Number.isInteger(size) || size < 1 || size > 500) {
            return flyError(400, "size_gb must be between 1 and 500");
          }
          const vid = `vol_${hex(8)}`;
          const dir = join(opts.dataDir, "volumes", vid);
          await Deno.mkdir(dir, { recursive: true });
          const v: SimVolume = {
            id: vid,
            app,
            name: body.name,
            state: "created",
            size_gb: size,
            region: body.region,
            zone: `${body.region}-${hex(2)}`,
            encrypted: body.encrypted ?? true,
            attached_machine_id: null,
            created_at: new Date().toISOString(),
            dir,
          };
          volumes.set(vid, v);
          return json(volumeView(v));
        }
        return flyError(405, "method not allowed");
      }
      const v = volumes.get(id);
      if (!v || v.app !== app || v.state === "destroyed") return flyError(404, "volume not found");
      if (action !== undefined) return flyError(404, "not found");
      if (method === "GET") return json(volumeView(v));
      if (method === "DELETE") {
        if (v.attached_machine_id) {
          return flyError(
            412,
            `failed_precondition: volume is attached to machine ${v.attached_machine_id}`,
          );
        }
        v.state = "destroyed";
        await Deno.remove(v.dir, { recursive: true }).catch(() => {});
        return json({ ...volumeView(v), state: "destroyed" });
      }
      return flyError(405, "method not allowed");
    }
    return flyError(404, "not found");
  }

  function createMachine(app: string, body: Body): Response {
    const config = body?.config;
    if (!config || typeof config.image !== "string" || config.image === "") {
      return flyError(400, "invalid config.image: image is required");
    }
    const region = typeof body.region === "string" && body.region ? body.region : "ord";
    const name = typeof body.name === "string" && body.name ? body.name : `sim-${hex(4)}`;
    if (liveByName(app, name)) return flyError(422, "Name has already been taken");
    const mounts = config.mounts ?? [];
    if (!Array.isArray(mounts) || mounts.length > 1) {
      return flyError(400, "only one volume can be mounted per machine");
    }
    for (const mount of mounts) {
      const v = volumes.get(mount?.volume);
      if (!v || v.app !== app || v.state === "destroyed") {
        return flyError(400, `volume ${mount?.volume} not found`);
      }
      if (v.attached_machine_id) {
        return flyError(400, `volume ${v.id} is already attached to ${v.attached_machine_id}`);
      }
      if (v.region !== region) return flyError(400, `volume ${v.id} is in region ${v.region}`);
      if (typeof mount.path !== "string" || !mount.path.startsWith("/") || mount.path === "/") {
        return flyError(400, "mount path must be absolute and not /");
      }
    }
    const now = new Date().toISOString();
    const m: SimMachine = {
      id: hex(7),
      app,
      name,
      state: "created",
      region,
      instance_id: ulid(),
      private_ip: `fdaa:0:1:a7b:${hex(2)}:${hex(2)}:${hex(2)}:2`,
      config: structuredClone(config),
      events: [],
      created_at: now,
      updated_at: now,
    };
    machines.set(m.id, m);
    for (const mount of mounts) volumes.get(mount.volume)!.attached_machine_id = m.id;
    transition(m, "created", "launch", "user");
    // The reply shows the machine as created; it starts after (as on Fly).
    const reply = json(machineView(m));
    if (!body.skip_launch) track(launch(m, "user"));
    return reply;
  }

  async function updateMachine(m: SimMachine, body: Body): Promise<Response> {
    const config = body?.config;
    if (!config || typeof config.image !== "string" || config.image === "") {
      return flyError(400, "invalid config.image: image is required");
    }
    if (body.region && body.region !== m.region) return flyError(400, "region is immutable");
    if (body.name && body.name !== m.name) return flyError(400, "name is immutable");
    const oldVolumes = (m.config.mounts ?? []).map((x) => x.volume).join(",");
    const newVolumes = (config.mounts ?? []).map((x: { volume: string }) => x.volume).join(",");
    if (oldVolumes !== newVolumes) {
      return flyError(400, "cannot change which volume a machine is attached to");
    }
    const wasRunning = m.state === "started" || m.state === "starting";
    await halt(m, "SIGTERM", "user");
    m.config = structuredClone(config);
    m.instance_id = ulid();
    transition(m, m.state, "update", "user");
    if (wasRunning || (!body.skip_launch && m.state !== "created")) track(launch(m, "user"));
    return json(machineView(m));
  }

  const server = Deno.serve({
    hostname: opts.hostname ?? "127.0.0.1",
    port: opts.port ?? 0,
    onListen: () => {},
  }, async (req) => {
    const url = new URL(req.url);
    if (!authorized(req)) return flyError(401, "Authenticate: token validation error");
    let body: Body = undefined;
    if (req.method === "POST" || req.method === "PUT" || req.method === "PATCH") {
      const text = await req.text();
      if (text !== "") {
        try {
          body = JSON.parse(text);
        } catch {
          return flyError(400, "invalid JSON body");
        }
      }
    }
    if (requests.length >= 20_000) requests.splice(0, 5_000);
    requests.push({
      method: req.method,
      path: url.pathname,
      query: Object.fromEntries(url.searchParams),
      body,
    });
    const fault = pickFault(req.method, url.pathname);
    if (fault?.kind === "429") {
      return flyError(
        429,
        "rate limit exceeded",
        fault.retryAfter !== undefined ? { "retry-after": String(fault.retryAfter) } : {},
      );
    }
    if (fault?.kind === "500") return flyError(500, "internal error (injected)");
    if (fault?.kind === "drop") return dropped();
    if (fault?.kind === "slow") {
      await new Promise((r) => setTimeout(r, fault.delayMs ?? 2000));
    }
    const parts = url.pathname.split("/").filter(Boolean).map(decodeURIComponent);
    const res = await track(
      route(req.method, parts, url.searchParams, body, undefined, fault?.kind === "fail-start"),
    );
    if (fault?.kind === "500-after") return flyError(500, "internal error (injected)");
    if (fault?.kind === "drop-after") return dropped();
    return res;
  });
  const addr = server.addr as Deno.NetAddr;
  const host = addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname;

  return {
    baseUrl: `http://${host}:${addr.port}`,
    state: { machines, volumes },
    faults,
    requests,
    insertMachine(m) {
      machines.set(m.id, m);
    },
    async close() {
      closing.abort();
      await server.shutdown();
      while (pending.size) await Promise.allSettled([...pending]);
      await Promise.allSettled(
        [...machines.values()].map(async (m) => {
          const p = m.process;
          m.process = undefined;
          await p?.stop("SIGKILL");
        }),
      );
    },
  };
}

/**
 * A launcher whose machines are `sleep` processes: real processes that stop
 * on a signal, for tests and benches that do not need init itself.
 */
export function fakeLauncher(opts: { onStart?: (m: SimMachineLaunch) => void } = {}): SimLauncher {
  return {
    start(m) {
      opts.onStart?.(m);
      const child = new Deno.Command("sleep", {
        args: ["infinity"],
        stdin: "null",
        stdout: "null",
        stderr: "null",
      }).spawn();
      const exited = child.status.then((s) => (s.signal ? null : s.code));
      let frozen = false;
      const send = (signal: Deno.Signal) => {
        try {
          child.kill(signal);
        } catch { /* already gone */ }
      };
      return Promise.resolve({
        exited,
        // One process, so SIGSTOP/SIGCONT is the whole machine.
        freeze() {
          send("SIGSTOP");
          frozen = true;
          return Promise.resolve();
        },
        thaw() {
          send("SIGCONT");
          frozen = false;
          return Promise.resolve();
        },
        async stop(signal: Deno.Signal = "SIGTERM") {
          // SIGKILL ends a stopped process as it is; another signal needs it running.
          if (frozen && signal !== "SIGKILL") send("SIGCONT");
          send(signal);
          await exited;
        },
      });
    },
  };
}
