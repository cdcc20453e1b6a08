/**
 * init's boot sequence: read configuration from the environment a Fly
 * Machine gives it, make this boot's identity, and serve.
 *
 * @module
 */
import { VaultError } from "../errors/mod.ts";
import { createMachineIdentity } from "../pki/mod.ts";
import { parseAddress } from "../transport/mod.ts";
import { detectSandbox } from "./sandbox.ts";
import { hideMachinePaths } from "./vault_paths.ts";
import { type InitServer, type InitServerOptions, startInitServer } from "./server.ts";
import {
  openRootfsStore,
  type ProvisionContext,
  provisionFromUrl,
  serveUpload,
  startWorkload,
  type Workload,
} from "../rootfs/mod.ts";
import type { VaultStore } from "./server.ts";
import { spawnInRootfs } from "./sandbox.ts";
import { ensureNamespace, stopNamespace } from "./namespace.ts";
import { endProcessesIn } from "./reap.ts";
import { createInteractiveHandlers } from "../console/mod.ts";
import { log } from "./log.ts";
import { createIdleSuspender, parseIdleSuspend, socketSuspend } from "./idle.ts";

/** Settings, each from a flag or the environment. */
export interface InitConfig {
  /** `[::]:8443` by default: the port Fly's 6PN and the proxy reach. */
  listen: string;
  /** The tenant volume's mount path. */
  dataDir: string;
  accessToken: string;
  machineId: string;
  tokenSocket: string;
  /** A provision whose upload or download gives no byte this long fails (ms; default 30 s). */
  provisionIdleMs?: number;
  /** The longest a `rootfs_url` download may take (ms; default one hour). */
  downloadMaxMs?: number;
  /** No authenticated connection this long: the machine suspends itself (ms; 0 never; 15 min). */
  idleSuspendMs?: number;
  /** `FLY_APP_NAME`: without it the machine cannot name itself to suspend. */
  appName?: string;
}

function positiveMs(name: string, raw: string | undefined): number | undefined {
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0) {
    throw new VaultError("init.bad_config", `${name} must be a positive number of milliseconds`);
  }
  return n;
}

/** Reads the configuration, failing clearly on what is missing. The token leaves the environment. */
export function initConfigFromEnv(overrides: Partial<InitConfig> = {}): InitConfig {
  const env = (name: string) => Deno.env.get(name) || undefined;
  const accessToken = overrides.accessToken ?? env("ACCESS_TOKEN");
  if (!accessToken) {
    throw new VaultError(
      "init.no_access_token",
      "ACCESS_TOKEN is not set",
      "set it in the machine's env (the admin template's [machine.config.env] does this)",
    );
  }
  // Children never need it; don't let it leak into the workload's environment.
  Deno.env.delete("ACCESS_TOKEN");
  const config: InitConfig = {
    listen: overrides.listen ?? env("FLY_VAULT_LISTEN") ?? "[::]:8443",
    dataDir: overrides.dataDir ?? env("FLY_VAULT_DATA") ?? "/data",
    accessToken,
    machineId: overrides.machineId ?? env("FLY_MACHINE_ID") ?? "local",
    tokenSocket: overrides.tokenSocket ?? env("FLY_VAULT_TOKEN_SOCKET") ?? "/.fly/api",
    provisionIdleMs: overrides.provisionIdleMs ??
      positiveMs("FLY_VAULT_PROVISION_IDLE_MS", env("FLY_VAULT_PROVISION_IDLE_MS")),
    downloadMaxMs: overrides.downloadMaxMs ??
      positiveMs("FLY_VAULT_DOWNLOAD_MAX_MS", env("FLY_VAULT_DOWNLOAD_MAX_MS")),
    idleSuspendMs: overrides.idleSuspendMs ?? parseIdleSuspend(env("FLY_VAULT_IDLE_SUSPEND")),
    appName: overrides.appName ?? env("FLY_APP_NAME"),
  };
  parseAddress(config.listen);
  return config;
}

/** Boots init: identity, sandbox check, store, server. */
export async function runInit(
  config: InitConfig,
  deps: Pick<InitServerOptions, "tokenSource"> & Partial<InitServerOptions> & {
    /** Called before a reprovision swaps the rootfs (stop sessions). */
    beforeSwap?: () => Promise<void>;
  },
): Promise<InitServer> {
  const mode = await detectSandbox();
  const identity = await createMachineIdentity({ machineId: config.machineId });
  const rootfs = await openRootfsStore(config.dataDir);
  // Error replies speak in the vault's paths: the client never learns the machine's layout.
  hideMachinePaths({ rootfsDir: rootfs.rootfsDir, dataDir: config.dataDir });
  const store: VaultStore = deps.store ?? {
    rootfsDir: rootfs.rootfsDir,
    // The old rootfs serves while a new one is provisioned; `failed` when mounts are missing.
    status: () => rootfs.status(),
  };
  let workload: Workload | null = null;
  // Without /root and /home mounted, neither the workload nor the user may write into the
  // rootfs believing it persists: a mount failure stops here, and status() says `failed`.
  const boot = async () => {
    if (!rootfs.mounted()) await rootfs.prepareMounts();
    // The vault namespace the workload, consoles and exec share (its /proc, /dev, persist
    // binds are taken from the mounts just made).
    if (mode === "root") {
      // One started in the swap window by an exec would hold the old tree: start afresh.
      await stopNamespace(rootfs.rootfsDir);
      await ensureNamespace(rootfs.rootfsDir).then(
        (ns) => log("init.namespace", { holder_pid: ns.holderPid }),
        (err) => log("init.namespace_failed", { error: String((err as Error).message) }),
      );
    }
    workload = await startWorkload(rootfs.rootfsDir, {
      spawn: (argv, cwd, o) => spawnInRootfs(rootfs.rootfsDir, argv, cwd, o),
    }).catch((err) => {
      log("workload.error", { error: String((err as Error).message) });
      return null;
    });
  };
  if (rootfs.state().state === "ready") {
    await boot().catch((err) => {
      log("init.mounts_failed", { error: String((err as Error).message) });
    });
  }
  const interactive = createInteractiveHandlers();
  const provisioning: ProvisionContext = {
    store: rootfs,
    idleMs: config.provisionIdleMs,
    downloadMaxMs: config.downloadMaxMs,
    beforeSwap: async () => {
      // Shells and the workload hold the old rootfs open; end them cleanly before the swap.
      await interactive.closeAll();
      await deps.beforeSwap?.();
      await (workload as Workload | null)?.stop();
      workload = null;
      // Whatever else still runs in the old rootfs (exec, exec -t, their children) ends too:
      // the vault namespace with everything in it, then anything rooted there outside it.
      const ended = await stopNamespace(rootfs.rootfsDir) +
        await endProcessesIn(rootfs.rootfsDir);
      if (ended) log("provision.ended_processes", { count: ended });
      if (rootfs.mounted()) await rootfs.releaseMounts();
    },
    afterSwap: boot,
  };
  const { hostname, port } = parseAddress(config.listen);
  // Scale to zero: idle vaults suspend themselves (idle.ts); off without an idle time or an app.
  const idle = config.idleSuspendMs && config.appName && !deps.activity
    ? createIdleSuspender({
      idleMs: config.idleSuspendMs,
      suspend: socketSuspend({
        socketPath: config.tokenSocket,
        app: config.appName,
        machineId: config.machineId,
      }),
      log,
    })
    : undefined;
  log("init.boot", {
    machine_id: config.machineId,
    sandbox: mode,
    data: config.dataDir,
    state: store.status().state,
  });
  const server = startInitServer({
    ...(idle ? { activity: idle } : {}),
    hostname,
    port,
    identity,
    machineId: config.machineId,
    accessToken: config.accessToken,
    store,
    provisionUrl: (url, sha256, send) => provisionFromUrl(url, sha256, provisioning, send),
    sessions: interactive.sessions,
    ...deps,
    handlers: {
      ...interactive.handlers,
      upload: (reader, writer) => serveUpload(reader, writer, provisioning),
      ...deps.handlers,
    },
  });
  log("init.idle_suspend", {
    after_ms: idle ? config.idleSuspendMs : null,
    ...(idle ? {} : { why: config.idleSuspendMs ? "no FLY_APP_NAME" : "off" }),
  });
  return idle
    ? {
      port: server.port,
      close() {
        idle.close();
        server.close();
      },
    }
    : server;
}
