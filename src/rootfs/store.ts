/**
 * The rootfs store: provisioning state, atomic swap and crash recovery under
 * the volume (`/data`).
 *
 * Swap protocol (crash-safe at every step):
 * 1. state `provisioning` (with the previous state kept inside it), extract
 *    into `rootfs.staging-<id>`, verify.
 * 2. seed `persist/root` and `persist/home` from the staging tree if missing or empty.
 * 3. write the swap intent (`swap: {id, …}`) into state.json: from here on
 *    recovery rolls *forward*, before it rolls *back*.
 * 4. rename `rootfs` → `rootfs.old-<id>`, `rootfs.staging-<id>` → `rootfs`, fsync `/data`.
 * 5. state `ready`; remove `rootfs.old-<id>`.
 *
 * @module
 */
import { z } from "zod";
import { isVaultError, VaultError } from "../errors/mod.ts";
import { type ExtractLimits, type ExtractProgress, extractRootfs } from "./extract.ts";
import { DEFAULT_LIMITS } from "./extract.ts";
import { exists, removeTree, syncDir, writeFileAtomic } from "./fsutil.ts";

/** The persisted state record (`/data/vault/state.json`). */
export const StateRecord = z.object({
  state: z.enum(["unprovisioned", "provisioning", "ready", "failed"]),
  reason: z.string().optional(),
  sha256: z.string().optional(),
  bytes: z.number().optional(),
  entries: z.number().optional(),
  provisioned_at: z.string().optional(),
  updated_at: z.string().optional(),
  /** Set while provisioning: the record to go back to if it does not complete. */
  previous: z.any().optional(),
  /** Set once the staging tree is complete and verified: recovery completes the swap. */
  swap: z.object({
    id: z.string(),
    sha256: z.string(),
    bytes: z.number(),
    entries: z.number(),
  }).optional(),
  /** The last provisioning failure, kept when an older rootfs goes on serving. */
  last_error: z.object({ code: z.string(), message: z.string(), at: z.string() }).optional(),
});
export type StateRecord = z.infer<typeof StateRecord>;

/** Where a store keeps things under its data directory. */
export interface StorePaths {
  dataDir: string;
  rootfs: string;
  persistRoot: string;
  persistHome: string;
  stateFile: string;
}

/** The named points a test can make provisioning stop at (env `FLY_VAULT_PROVISION_STOP_AT`). */
export type StopPoint = "after_extract" | "before_swap" | "mid_swap" | "after_swap";

/** Progress of {@link RootfsStore.provision}. */
export interface ProvisionProgress extends ExtractProgress {
  phase: "extract" | "verify" | "swap";
}

/** Options of {@link RootfsStore.provision}. */
export interface ProvisionOptions {
  expectedSha256?: string;
  expectedSize?: number;
  limits?: ExtractLimits;
  onProgress?: (p: ProvisionProgress) => void;
  /** Called after verification, right before the swap: stop the workload and sessions. */
  beforeSwap?: () => Promise<void>;
  /** Called after the swap (and after mounts are back, when they were up). */
  afterSwap?: () => Promise<void>;
  signal?: AbortSignal;
  spaceLeft?: number;
  /** Minimum interval between extract progress calls (ms), default 100. */
  progressIntervalMs?: number;
  /**
   * Fail with `rootfs.source_stalled` when the source gives no byte for this long
   * while extraction waits on it (ms); default {@link DEFAULT_SOURCE_IDLE_MS}.
   */
  idleMs?: number;
}

/** How long a provision's source may stay silent before it is abandoned (30 s). */
export const DEFAULT_SOURCE_IDLE_MS = 30_000;
/** How long a new provision waits for the one it supersedes to clean up (30 s). */
export const SUPERSEDE_WAIT_MS = 30_000;

/** What a successful provision did. */
export interface ProvisionResult {
  sha256: string;
  bytes: number;
  uncompressedBytes: number;
  entries: number;
  seconds: number;
  notes: string[];
  /** Whether persist/root and persist/home were seeded by this provision. */
  seeded: string[];
}

/** The handle init holds on its volume. */
export interface RootfsStore {
  readonly paths: StorePaths;
  /** The rootfs directory (`<dataDir>/rootfs`), valid when state is `ready`. */
  readonly rootfsDir: string;
  /** The current state record. */
  state(): StateRecord;
  /**
   * The state as the wire's `Status`/`AuthOk` carry it (init's `VaultStore.status()`):
   * when an older rootfs serves after a failed provision, `reason` says so.
   */
  status(): {
    state: StateRecord["state"];
    reason?: string;
    provisioned_at?: string;
    sha256?: string;
  };
  /**
   * Extracts, verifies and swaps in a new rootfs. One at a time: a new provision
   * cancels one that has not reached its swap (`rootfs.superseded` for the old one)
   * and waits for its clean-up; during a swap it is refused `rootfs.busy`.
   */
  provision(source: ReadableStream<Uint8Array>, opts?: ProvisionOptions): Promise<ProvisionResult>;
  /** Mounts persist, /proc, /sys, /dev, /dev/pts, resolv.conf into the rootfs. */
  prepareMounts(): Promise<string[]>;
  /** Unmounts everything below the rootfs. */
  releaseMounts(): Promise<void>;
  /** True while mounts made by {@link prepareMounts} are up. */
  mounted(): boolean;
  /** Why the last {@link prepareMounts} failed, or null; `status()` is then `failed`. */
  mountError(): VaultError | null;
  /**
   * Resolves when background work is done: the previous rootfs is removed after a
   * provision has answered (a crash before that is cleaned up by {@link recover}).
   */
  settled(): Promise<void>;
}

/** Paths of a store rooted at `dataDir`. */
export function storePaths(dataDir: string): StorePaths {
  const d = dataDir.replace(/\/+$/, "");
  return {
    dataDir: d,
    rootfs: `${d}/rootfs`,
    persistRoot: `${d}/persist/root`,
    persistHome: `${d}/persist/home`,
    stateFile: `${d}/vault/state.json`,
  };
}

async function readState(file: string): Promise<StateRecord> {
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return { state: "unprovisioned" };
    throw err;
  }
  try {
    return StateRecord.parse(JSON.parse(text));
  } catch (err) {
    throw new VaultError(
      "rootfs.bad_state",
      `${file} is not a valid state record: ${err instanceof Error ? err.message : err}`,
      "move the file away to start over (the rootfs is kept)",
    );
  }
}

async function writeState(file: string, rec: StateRecord): Promise<void> {
  await writeFileAtomic(
    file,
    JSON.stringify({ ...rec, updated_at: new Date().toISOString() }, null, 2) + "\n",
  );
}

/** Stops the process when `FLY_VAULT_PROVISION_STOP_AT` names this point (crash tests). */
async function stopPoint(name: StopPoint): Promise<void> {
  if (Deno.env.get("FLY_VAULT_PROVISION_STOP_AT") !== name) return;
  console.log(`stop-point ${name}`);
  // The test kills us with SIGKILL here; waiting forever makes the point exact. The timer
  // keeps the event loop alive: a bare pending promise would let Deno exit instead.
  await new Promise(() => setInterval(() => {}, 1 << 30));
}

async function listWithPrefix(dir: string, prefix: string): Promise<string[]> {
  const out: string[] = [];
  try {
    for await (const e of Deno.readDir(dir)) if (e.name.startsWith(prefix)) out.push(e.name);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  return out;
}

/**
 * Puts the data directory back into a consistent state after a crash:
 * a committed swap is completed, anything else is rolled back (staging
 * removed, old rootfs kept), leftovers are removed. Returns the state.
 */
export async function recover(dataDir: string): Promise<StateRecord> {
  const p = storePaths(dataDir);
  await Deno.mkdir(`${p.dataDir}/vault`, { recursive: true });
  let rec = await readState(p.stateFile);
  if (!await exists(p.stateFile) && await exists(`${p.rootfs}/usr`)) {
    // A rootfs laid out by other means (an older init, the demo, an operator): it serves.
    rec = { state: "ready", provisioned_at: (await Deno.stat(p.rootfs)).mtime?.toISOString() };
    await writeState(p.stateFile, rec);
  }
  if (rec.state === "provisioning") {
    const swap = rec.swap;
    if (swap && await exists(`${p.dataDir}/rootfs.staging-${swap.id}`)) {
      // Committed but not finished: finish it.
      if (await exists(p.rootfs)) {
        await Deno.rename(p.rootfs, `${p.dataDir}/rootfs.old-${swap.id}`);
      }
      await Deno.rename(`${p.dataDir}/rootfs.staging-${swap.id}`, p.rootfs);
      await syncDir(p.dataDir);
    }
    if (swap && await exists(p.rootfs)) {
      rec = readyRecord(swap);
    } else {
      const prev = StateRecord.safeParse(rec.previous);
      const before: StateRecord = prev.success ? prev.data : { state: "unprovisioned" };
      rec = {
        ...before,
        previous: undefined,
        swap: undefined,
        last_error: {
          code: "rootfs.interrupted",
          message: "provisioning was interrupted (init restarted)",
          at: new Date().toISOString(),
        },
      };
      if (rec.state === "ready" && !await exists(p.rootfs)) {
        rec = { state: "failed", reason: "the rootfs directory is missing" };
      }
    }
    await writeState(p.stateFile, rec);
  } else if (rec.state === "ready" && !await exists(p.rootfs)) {
    rec = { state: "failed", reason: "the rootfs directory is missing" };
    await writeState(p.stateFile, rec);
  }
  for (const name of await listWithPrefix(p.dataDir, "rootfs.staging-")) {
    await removeTree(`${p.dataDir}/${name}`);
  }
  for (const name of await listWithPrefix(p.dataDir, "rootfs.old-")) {
    await removeTree(`${p.dataDir}/${name}`);
  }
  for (const dir of [p.persistRoot, p.persistHome]) {
    const parent = dir.slice(0, dir.lastIndexOf("/"));
    const base = dir.slice(dir.lastIndexOf("/") + 1);
    for (const name of await listWithPrefix(parent, `.${base}.seed-`)) {
      await removeTree(`${parent}/${name}`);
    }
  }
  return rec;
}

function readyRecord(s: { sha256: string; bytes: number; entries: number }): StateRecord {
  return {
    state: "ready",
    sha256: s.sha256,
    bytes: s.bytes,
    entries: s.entries,
    provisioned_at: new Date().toISOString(),
  };
}

async function isEmptyDir(path: string): Promise<boolean> {
  try {
    for await (const _ of Deno.readDir(path)) return false;
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return true;
    throw err;
  }
}

/** Seeds `persistDir` from `from` when persist is missing or empty. True when it did. */
async function seed(from: string, persistDir: string): Promise<boolean> {
  if (!await isEmptyDir(persistDir)) return false;
  const parent = persistDir.slice(0, persistDir.lastIndexOf("/"));
  const base = persistDir.slice(persistDir.lastIndexOf("/") + 1);
  await Deno.mkdir(parent, { recursive: true, mode: 0o755 });
  const tmp = `${parent}/.${base}.seed-${crypto.randomUUID().slice(0, 8)}`;
  let st: Deno.FileInfo | undefined;
  try {
    st = await Deno.lstat(from);
  } catch { /* the image has no such directory */ }
  if (st?.isDirectory) {
    const r = await new Deno.Command("cp", {
      args: ["-a", "--reflink=auto", "--", from, tmp],
      stderr: "piped",
    }).output();
    if (!r.success) {
      await removeTree(tmp);
      throw new VaultError(
        "rootfs.seed_failed",
        `seeding ${persistDir} failed: ${new TextDecoder().decode(r.stderr).trim()}`,
      );
    }
  } else {
    await Deno.mkdir(tmp, { mode: base === "root" ? 0o700 : 0o755 });
  }
  await new Deno.Command("sync", { args: ["-f", tmp] }).output();
  if (await exists(persistDir)) await Deno.remove(persistDir);
  await Deno.rename(tmp, persistDir);
  await syncDir(parent);
  return true;
}

/**
 * Opens (and recovers) the store under `dataDir` (`/data` on Fly). Call once
 * per process; the returned store serialises provisions.
 */
export async function openRootfsStore(dataDir: string): Promise<RootfsStore> {
  const paths = storePaths(dataDir);
  let rec = await recover(dataDir);
  /** The provision in progress, if any. */
  let current: { ctl: AbortController; swapping: boolean; done: Promise<void> } | null = null;
  let cleanup: Promise<void> = Promise.resolve();
  let mountsUp = false;
  let mountError: VaultError | null = null;
  const mounts = await import("./mounts.ts");

  const store: RootfsStore = {
    paths,
    rootfsDir: paths.rootfs,
    state: () => structuredClone(rec),
    status: () => {
      if (rec.state === "provisioning" && !current?.swapping) {
        // The previous rootfs is untouched until the swap: it goes on serving.
        const prev = StateRecord.safeParse(rec.previous);
        if (prev.success && prev.data.state === "ready" && !mountError) {
          return {
            state: "ready" as const,
            reason: "a new rootfs is being provisioned; this one serves until the swap",
            ...(prev.data.provisioned_at ? { provisioned_at: prev.data.provisioned_at } : {}),
            ...(prev.data.sha256 ? { sha256: prev.data.sha256 } : {}),
          };
        }
      }
      if (rec.state === "ready" && mountError) {
        return {
          state: "failed" as const,
          reason: `the rootfs is in place but its mounts failed (${mountError.code}: ${
            mountError.message.slice(0, 3000)
          })`,
          ...(rec.provisioned_at ? { provisioned_at: rec.provisioned_at } : {}),
          ...(rec.sha256 ? { sha256: rec.sha256 } : {}),
        };
      }
      const reason = rec.reason ??
        (rec.state === "ready" && rec.last_error
          ? `the last provision failed (${rec.last_error.code}: ${rec.last_error.message}); the previous rootfs serves`
          : undefined);
      return {
        state: rec.state,
        ...(reason ? { reason: reason.slice(0, 4096) } : {}),
        ...(rec.provisioned_at ? { provisioned_at: rec.provisioned_at } : {}),
        ...(rec.sha256 ? { sha256: rec.sha256 } : {}),
      };
    },
    mounted: () => mountsUp,
    mountError: () => mountError,
    settled: () => cleanup,
    async prepareMounts() {
      try {
        const notes = await mounts.prepareMounts(paths);
        mountsUp = true;
        mountError = null;
        return notes;
      } catch (err) {
        mountsUp = false;
        mountError = isVaultError(err) ? err : new VaultError(
          "rootfs.mount_failed",
          `mounting failed: ${err instanceof Error ? err.message : err}`,
        );
        throw mountError;
      }
    },
    async releaseMounts() {
      await mounts.releaseMounts(paths.rootfs);
      mountsUp = false;
    },
    async provision(source, opts = {}) {
      const deadline = Date.now() + SUPERSEDE_WAIT_MS;
      while (current) {
        const running: { ctl: AbortController; swapping: boolean; done: Promise<void> } = current;
        if (!running.swapping) {
          // The newest request is the tenant's intent; an abandoned upload (a client that
          // vanished without closing) must not hold the vault until the idle timeout.
          running.ctl.abort(
            new VaultError(
              "rootfs.superseded",
              "a newer provision replaced this one",
              "the newer provision goes on; the previous rootfs serves until it swaps",
            ),
          );
        }
        let timer: ReturnType<typeof setTimeout> | undefined;
        const left = deadline - Date.now();
        const finished = left > 0 &&
          await Promise.race([
            running.done.then(() => true),
            new Promise<false>((r) => timer = setTimeout(() => r(false), left)),
          ]);
        clearTimeout(timer);
        if (!finished) {
          await source.cancel().catch(() => {});
          throw new VaultError(
            "rootfs.busy",
            running.swapping
              ? "a provision is swapping in its rootfs"
              : "the previous provision did not stop in time",
            "wait for it to finish, then retry",
          );
        }
      }
      const ctl = new AbortController();
      let release!: () => void;
      const me = { ctl, swapping: false, done: new Promise<void>((r) => release = r) };
      current = me;
      const onOuterAbort = () => ctl.abort(opts.signal?.reason);
      opts.signal?.addEventListener("abort", onOuterAbort, { once: true });
      if (opts.signal?.aborted) onOuterAbort();
      source = watchIdle(source, opts.idleMs ?? DEFAULT_SOURCE_IDLE_MS, ctl);
      let committed = false;
      await cleanup;
      const id = `${Date.now().toString(36)}-${crypto.randomUUID().slice(0, 6)}`;
      const staging = `${paths.dataDir}/rootfs.staging-${id}`;
      const before = rec;
      try {
        rec = { state: "provisioning", previous: stripInternal(before) };
        await writeState(paths.stateFile, rec);
        const result = await extractRootfs(source, {
          stagingDir: staging,
          expectedSha256: opts.expectedSha256,
          expectedSize: opts.expectedSize,
          limits: opts.limits ?? DEFAULT_LIMITS,
          signal: ctl.signal,
          spaceLeft: opts.spaceLeft,
          progressIntervalMs: opts.progressIntervalMs,
          onProgress: (p) => opts.onProgress?.({ phase: "extract", ...p }),
        });
        await stopPoint("after_extract");
        opts.onProgress?.({
          phase: "verify",
          compressedBytes: result.compressedBytes,
          uncompressedBytes: result.uncompressedBytes,
          entries: result.entries,
          total: opts.expectedSize,
        });
        const mountNotes = await mounts.checkMountPoints(staging);
        const seeded: string[] = [];
        if (await seed(`${staging}/root`, paths.persistRoot)) seeded.push("/root");
        if (await seed(`${staging}/home`, paths.persistHome)) seeded.push("/home");
        // Make the staging tree durable before it is committed to.
        await new Deno.Command("sync", { args: ["-f", staging] }).output();
        // Past this point the provision cannot be cancelled: sessions end, the swap comes.
        if (ctl.signal.aborted) throw ctl.signal.reason;
        me.swapping = true;
        await opts.beforeSwap?.();
        await stopPoint("before_swap");
        const swap = {
          id,
          sha256: result.sha256,
          bytes: result.compressedBytes,
          entries: result.entries,
        };
        rec = { ...rec, swap };
        await writeState(paths.stateFile, rec);
        opts.onProgress?.({
          phase: "swap",
          compressedBytes: result.compressedBytes,
          uncompressedBytes: result.uncompressedBytes,
          entries: result.entries,
          total: opts.expectedSize,
        });
        const remount = mountsUp;
        if (mountsUp) await store.releaseMounts();
        const old = `${paths.dataDir}/rootfs.old-${id}`;
        const hadOld = await exists(paths.rootfs);
        if (hadOld) await Deno.rename(paths.rootfs, old);
        await stopPoint("mid_swap");
        await Deno.rename(staging, paths.rootfs);
        await syncDir(paths.dataDir);
        await stopPoint("after_swap");
        rec = readyRecord(swap);
        await writeState(paths.stateFile, rec);
        committed = true;
        // Removing the old tree takes as long as writing it: not on the user's clock.
        if (hadOld) cleanup = removeTree(old).catch(() => {});
        if (remount) await store.prepareMounts();
        await opts.afterSwap?.();
        return {
          sha256: result.sha256,
          bytes: result.compressedBytes,
          uncompressedBytes: result.uncompressedBytes,
          entries: result.entries,
          seconds: result.seconds,
          notes: [...result.notes, ...mountNotes],
          seeded,
        };
      } catch (err) {
        // Why it was cancelled (stalled, superseded, the client left) says more than "aborted".
        const reason = ctl.signal.aborted ? ctl.signal.reason : undefined;
        const cause = isVaultError(reason) ? reason : err;
        const e = isVaultError(cause) ? cause : new VaultError(
          "rootfs.provision_failed",
          `provisioning failed: ${cause instanceof Error ? cause.message : cause}`,
        );
        if (committed) {
          // The new rootfs is in place and recorded; what failed is bringing it up (mounts,
          // workload). status() says so through mountError; the caller hears why.
          throw e;
        }
        // Not committed (or failed while committing): the old rootfs stays.
        await removeTree(staging).catch(() => {});
        const interrupted = e.code === "rootfs.incomplete" || e.code === "rootfs.aborted" ||
          e.code === "rootfs.source_failed" || e.code === "rootfs.source_stalled" ||
          e.code === "rootfs.superseded" || e.code === "rootfs.cancelled" ||
          e.code === "rootfs.download_too_long";
        const lastError = { code: e.code, message: e.message, at: new Date().toISOString() };
        if (rec.swap && await exists(paths.rootfs) && !await exists(staging)) {
          rec = readyRecord(rec.swap);
        } else if (interrupted || before.state === "ready") {
          rec = { ...stripInternal(before), last_error: lastError };
        } else {
          rec = { state: "failed", reason: `${e.code}: ${e.message}`, last_error: lastError };
        }
        await writeState(paths.stateFile, rec).catch(() => {});
        throw e;
      } finally {
        opts.signal?.removeEventListener("abort", onOuterAbort);
        if (current === me) current = null;
        release();
      }
    },
  };
  return store;
}

/**
 * Passes `source` through, aborting `ctl` with `rootfs.source_stalled` when a read
 * waits longer than `idleMs`. Only time spent waiting on the source counts: a
 * consumer that is slow to pull (tar writing to disk) is not a stalled source.
 */
function watchIdle(
  source: ReadableStream<Uint8Array>,
  idleMs: number,
  ctl: AbortController,
): ReadableStream<Uint8Array> {
  const reader = source.getReader();
  const onAbort = () => reader.cancel(ctl.signal.reason).catch(() => {});
  ctl.signal.addEventListener("abort", onAbort, { once: true });
  return new ReadableStream<Uint8Array>({
    async pull(c) {
      const timer = setTimeout(() => {
        ctl.abort(
          new VaultError(
            "rootfs.source_stalled",
            `the tarball stopped arriving: no data for ${idleMs / 1000} s`,
            "check the server or the connection, then provision again; the previous rootfs serves",
          ),
        );
      }, idleMs);
      try {
        const r = await reader.read();
        if (r.done) {
          ctl.signal.removeEventListener("abort", onAbort);
          c.close();
        } else c.enqueue(r.value);
      } catch (err) {
        c.error(err);
      } finally {
        clearTimeout(timer);
      }
    },
    cancel(reason) {
      ctl.signal.removeEventListener("abort", onAbort);
      return reader.cancel(reason).catch(() => {});
    },
  }, { highWaterMark: 0 });
}

function stripInternal(r: StateRecord): StateRecord {
  const { previous: _p, swap: _s, ...rest } = r;
  return rest;
}
