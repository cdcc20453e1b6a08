/**
 * The tenant's rootfs on the volume: streaming verified extraction, atomic
 * (re)provisioning with crash recovery, persisted /root and /home, the
 * mounts a workload needs, and the image's declared workload.
 *
 * Layout under the data directory (`/data` on Fly):
 * ```
 * rootfs/              the extracted rootfs (the workload's /)
 * rootfs.staging-<id>/ a provision in progress (removed by recover())
 * rootfs.old-<id>/     the previous rootfs, between swap and removal
 * persist/root, persist/home   bind-mounted on rootfs/root and rootfs/home
 * vault/state.json     the state record, written atomically (tmp + fsync + rename + fsync dir)
 * ```
 *
 * How init uses it — simplest, one handle for store, mounts and workload:
 * ```ts
 * const rt = await openRootfsRuntime("/data", { beforeSwap: endSessions });
 * await rt.boot();                      // mounts + workload when ready
 * // upload stream:  await serveUpload(reader, writer, rt.ctx);
 * // ProvisionUrl:   await provisionFromUrl(msg.url, msg.sha256, rt.ctx, (m) => writer.send(m));
 * // exit:           await rt.shutdown();
 * ```
 *
 * Or by hand:
 * ```ts
 * const store = await openRootfsStore("/data");        // recovers from a crash first
 * let workload = null;
 * if (store.state().state === "ready") {
 *   await store.prepareMounts();
 *   workload = await startWorkload(store.rootfsDir);
 * }
 * const ctx = {
 *   store,
 *   beforeSwap: async () => { await workload?.stop(); workload = null; },
 *   afterSwap: async () => {
 *     if (!store.mounted()) await store.prepareMounts();
 *     workload = await startWorkload(store.rootfsDir);
 *   },
 * };
 * // upload stream (tag consumed): await serveUpload(reader, writer, ctx);
 * // control stream ProvisionUrl: await provisionFromUrl(msg.url, msg.sha256, ctx, (m) => w.send(m));
 * ```
 *
 * Errors are {@link VaultError}s with codes `rootfs.<reason>`; see
 * {@link extractRootfs} for the list of refusals.
 *
 * @module
 */
export {
  DEFAULT_LIMITS,
  type ExtractLimits,
  type ExtractOptions,
  type ExtractProgress,
  type ExtractResult,
  extractRootfs,
  tarExtractArgs,
} from "./extract.ts";
export {
  bytesToLatin1,
  checksumOk,
  cstring,
  isZeroBlock,
  parseNumber,
  parsePax,
  RootfsError,
  type TarEntry,
  TarFilter,
} from "./tarscan.ts";
export {
  DEFAULT_SOURCE_IDLE_MS,
  openRootfsStore,
  type ProvisionOptions,
  type ProvisionProgress,
  type ProvisionResult,
  recover,
  type RootfsStore,
  StateRecord,
  type StopPoint,
  type StorePaths,
  storePaths,
  SUPERSEDE_WAIT_MS,
} from "./store.ts";
export {
  checkMountPoints,
  MOUNT_POINTS,
  prepareMounts,
  releaseMounts,
  verifyPersistMounts,
} from "./mounts.ts";
export { closeFd, InRootError, type InRootOptions, openInRoot, readFileInRoot } from "./inroot.ts";
export {
  IMAGE_CONFIG_PATH,
  ImageConfig,
  readImageConfig,
  startWorkload,
  type Workload,
  workloadArgv,
  type WorkloadOptions,
} from "./workload.ts";
export {
  cancelledError,
  checkProvisionUrl,
  DEFAULT_DOWNLOAD_MAX_MS,
  errorMessage,
  type ProvisionContext,
  provisionFromUrl,
  type ProvisionMessage,
  serveUpload,
} from "./serve.ts";
export { removeTree, writeFileAtomic } from "./fsutil.ts";
export { openRootfsRuntime, type RootfsRuntime, type RuntimeOptions } from "./runtime.ts";
