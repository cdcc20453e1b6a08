/**
 * Everything init needs from this module in one handle: the store, the
 * mounts, and the workload supervisor, with the provisioning context whose
 * hooks stop the workload (and init's sessions) before a swap and bring
 * mounts and workload back after it.
 *
 * @module
 */
import type { ExtractLimits } from "./extract.ts";
import type { ProvisionContext } from "./serve.ts";
import { openRootfsStore, type RootfsStore } from "./store.ts";
import { startWorkload, type Workload, type WorkloadOptions } from "./workload.ts";

/** Options of {@link openRootfsRuntime}. */
export interface RuntimeOptions {
  /** Make the mounts (needs root or a user+mount namespace); default true. */
  mounts?: boolean;
  /** Run the image's declared workload; default true. */
  workload?: boolean;
  workloadOptions?: WorkloadOptions;
  /** Init's own pre-swap step: end console/exec sessions in the old rootfs. */
  beforeSwap?: () => Promise<void>;
  limits?: ExtractLimits;
  /** See {@link ProvisionContext.idleMs}. */
  idleMs?: number;
  /** See {@link ProvisionContext.downloadMaxMs}. */
  downloadMaxMs?: number;
}

/** The rootfs side of a running init. */
export interface RootfsRuntime {
  readonly store: RootfsStore;
  /** Pass to `serveUpload` / `provisionFromUrl`. */
  readonly ctx: ProvisionContext;
  /** At start: when ready, mount and start the workload. Returns notes about mounts. */
  boot(): Promise<string[]>;
  /** The running workload supervisor, if any. */
  workload(): Workload | null;
  /** At exit: stop the workload, release the mounts. */
  shutdown(): Promise<void>;
}

/** Opens (and recovers) the store under `dataDir` and wires workload and mounts to it. */
export async function openRootfsRuntime(
  dataDir: string,
  opts: RuntimeOptions = {},
): Promise<RootfsRuntime> {
  const store = await openRootfsStore(dataDir);
  const mounts = opts.mounts ?? true;
  let workload: Workload | null = null;
  const stopWorkload = async () => {
    const w = workload;
    workload = null;
    await w?.stop();
  };
  const up = async (): Promise<string[]> => {
    let notes: string[] = [];
    if (mounts && !store.mounted()) notes = await store.prepareMounts();
    if (opts.workload ?? true) {
      workload = await startWorkload(store.rootfsDir, opts.workloadOptions);
    }
    return notes;
  };
  return {
    store,
    ctx: {
      store,
      limits: opts.limits,
      idleMs: opts.idleMs,
      downloadMaxMs: opts.downloadMaxMs,
      beforeSwap: async () => {
        await opts.beforeSwap?.();
        await stopWorkload();
      },
      afterSwap: async () => {
        await up();
      },
    },
    async boot() {
      if (store.state().state !== "ready") return [];
      return await up();
    },
    workload: () => workload,
    async shutdown() {
      await stopWorkload();
      if (store.mounted()) await store.releaseMounts();
    },
  };
}
