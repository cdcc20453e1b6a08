/**
 * Server-side handlers for provisioning: the upload stream and
 * `ProvisionUrl` on the control stream. Init wires these into its QUIC
 * server; they only speak in protocol messages and never touch QUIC.
 *
 * @module
 */
import { isVaultError, VaultError } from "../errors/mod.ts";
import {
  type ErrorMessage,
  type FrameReader,
  type FrameWriter,
  type Progress,
  type ProvisionDone,
  UploadRequest,
} from "../protocol/mod.ts";
import type { ExtractLimits } from "./extract.ts";
import {
  DEFAULT_SOURCE_IDLE_MS,
  type ProvisionProgress,
  type ProvisionResult,
  type RootfsStore,
} from "./store.ts";

/** What the provisioning handlers need from init. */
export interface ProvisionContext {
  store: RootfsStore;
  /** Stop the workload and sessions (called after verification, before the swap). */
  beforeSwap?: () => Promise<void>;
  /** Start the workload again (called after the swap and the remount). */
  afterSwap?: () => Promise<void>;
  limits?: ExtractLimits;
  /** Minimum interval between progress frames (ms); default 200. */
  progressIntervalMs?: number;
  /**
   * How long an upload or a download may give no byte (ms) before the provision is
   * abandoned; default 30 s ({@link DEFAULT_SOURCE_IDLE_MS}). Also bounds the wait
   * for a download's response headers.
   */
  idleMs?: number;
  /** The longest a `rootfs_url` download may take in all (ms); default one hour. */
  downloadMaxMs?: number;
}

/** How often a silent provision repeats its last progress frame (ms). */
const HEARTBEAT_MS = 1_000;

/** Default bound on a whole `rootfs_url` download: one hour (≈ 1 GiB at 2.4 Mbit/s). */
export const DEFAULT_DOWNLOAD_MAX_MS = 3_600_000;

/** The error a provision ends with when its client went away. */
export function cancelledError(why: string): VaultError {
  return new VaultError(
    "rootfs.cancelled",
    `provisioning was cancelled: ${why}`,
    "the previous rootfs serves; provision again when ready",
  );
}

/** A message a provisioning handler sends back. */
export type ProvisionMessage = Progress | ProvisionDone | ErrorMessage;

/** The error message for `err`, for the wire. */
export function errorMessage(err: unknown): ErrorMessage {
  if (isVaultError(err)) {
    return {
      type: "error",
      code: err.code.slice(0, 64),
      message: err.message.slice(0, 4096),
      ...(err.hint ? { hint: err.hint.slice(0, 4096) } : {}),
    };
  }
  return {
    type: "error",
    code: "rootfs.internal",
    message: (err instanceof Error ? err.message : String(err)).slice(0, 4096),
  };
}

function doneMessage(r: ProvisionResult): ProvisionDone {
  const notes = [...r.notes];
  if (r.seeded.length) notes.push(`seeded persistent ${r.seeded.join(" and ")} from the image`);
  return {
    type: "provision_done",
    sha256: r.sha256,
    bytes: r.bytes,
    entries: r.entries,
    seconds: Math.round(r.seconds * 1000) / 1000,
    ...(notes.length ? { notes: notes.slice(0, 100).map((n) => n.slice(0, 4096)) } : {}),
  };
}

/**
 * Turns store progress into protocol frames, throttled, never blocking the
 * extraction: frames go out in order through one promise chain.
 */
function progressSender(
  send: (m: ProvisionMessage) => Promise<void>,
  intervalMs: number,
  transferPhase: "receive" | "download",
  onGone?: (err: unknown) => void,
) {
  let chain = Promise.resolve();
  let last = 0;
  let lastPhase = "";
  let lastFrame: ProvisionMessage | null = null;
  let lastSent = performance.now();
  const queue = (m: ProvisionMessage) => {
    lastFrame = m;
    lastSent = performance.now();
    // A frame that cannot be sent means the client is gone: nobody waits for this provision.
    chain = chain.then(() => send(m)).catch((err) => onGone?.(err));
  };
  // While a download does not move (a stalled server), repeat the last frame now and then:
  // a client that left is noticed by the failed send, not only by the idle bound. (An
  // upload needs none: its own stream breaks when the client goes.)
  const heartbeat = transferPhase === "download"
    ? setInterval(() => {
      if (lastFrame?.type === "progress" && performance.now() - lastSent >= HEARTBEAT_MS) {
        queue(lastFrame);
      }
    }, HEARTBEAT_MS)
    : undefined;
  return {
    onProgress(p: ProvisionProgress) {
      const now = performance.now();
      if (p.phase === lastPhase && now - last < intervalMs) return;
      last = now;
      lastPhase = p.phase;
      if (p.phase === "extract") {
        queue({
          type: "progress",
          phase: transferPhase,
          done: p.compressedBytes,
          ...(p.total !== undefined ? { total: p.total } : {}),
        });
        queue({
          type: "progress",
          phase: "extract",
          done: p.uncompressedBytes,
          note: `${p.entries} entries`,
        });
      } else {
        queue({ type: "progress", phase: p.phase, done: p.entries, note: `${p.entries} entries` });
      }
    },
    queue,
    flush: () => (clearInterval(heartbeat), chain),
  };
}

/**
 * Serves one upload stream (its tag byte already consumed): reads
 * `UploadRequest`, streams exactly `size` body bytes into the store, sends
 * `Progress` frames, then `ProvisionDone` or an `ErrorMessage`, and closes.
 */
export async function serveUpload(
  reader: FrameReader,
  writer: FrameWriter,
  ctx: ProvisionContext,
  signal?: AbortSignal,
): Promise<void> {
  const gone = new AbortController();
  const onSignal = () => gone.abort(cancelledError("the client disconnected"));
  signal?.addEventListener("abort", onSignal, { once: true });
  const out = progressSender(
    (m) => writer.send(m),
    ctx.progressIntervalMs ?? 200,
    "receive",
    () => gone.abort(cancelledError("the client stopped listening")),
  );
  try {
    const req = await reader.message(UploadRequest, "upload request");
    const result = await ctx.store.provision(reader.raw(), {
      signal: gone.signal,
      idleMs: ctx.idleMs,
      expectedSha256: req.sha256,
      expectedSize: req.size,
      limits: ctx.limits,
      beforeSwap: ctx.beforeSwap,
      afterSwap: ctx.afterSwap,
      onProgress: out.onProgress,
    });
    out.queue(doneMessage(result));
  } catch (err) {
    out.queue(errorMessage(err));
    await reader.cancel(err);
  }
  signal?.removeEventListener("abort", onSignal);
  await out.flush();
  await writer.close().catch(() => {});
}

function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, "").toLowerCase();
  return h === "localhost" || h === "::1" || /^127\.\d+\.\d+\.\d+$/.test(h);
}

/** Refuses a provisioning URL that is not https (http only for loopback hosts). */
export function checkProvisionUrl(raw: string): URL {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new VaultError("rootfs.bad_url", `not a URL: ${raw}`);
  }
  if (url.protocol === "https:") return url;
  if (url.protocol === "http:" && isLoopbackHost(url.hostname)) return url;
  throw new VaultError(
    "rootfs.bad_url",
    `refusing ${url.protocol}//${url.host}: rootfs URLs must be https`,
    "serve the tarball over https (http is only accepted for loopback, in tests)",
  );
}

/**
 * Downloads `url` (https; http for loopback only; redirects followed and
 * re-checked, at most 5) straight into the store. Sends `Progress`
 * (download/extract/verify/swap) then `ProvisionDone` or an `ErrorMessage`
 * through `send`; never throws.
 */
export async function provisionFromUrl(
  url: string,
  sha256: string | undefined,
  ctx: ProvisionContext,
  send: (msg: ProvisionMessage) => Promise<void>,
  signal?: AbortSignal,
): Promise<void> {
  // One controller for the whole download: the client leaving, the total bound, a
  // stalled server before the headers, or a failed progress frame all end it.
  const ctl = new AbortController();
  const onSignal = () => ctl.abort(cancelledError("the client disconnected"));
  signal?.addEventListener("abort", onSignal, { once: true });
  if (signal?.aborted) onSignal();
  const out = progressSender(
    send,
    ctx.progressIntervalMs ?? 200,
    "download",
    () => ctl.abort(cancelledError("the client stopped listening")),
  );
  const idleMs = ctx.idleMs ?? DEFAULT_SOURCE_IDLE_MS;
  const maxMs = ctx.downloadMaxMs ?? DEFAULT_DOWNLOAD_MAX_MS;
  const total = setTimeout(() =>
    ctl.abort(
      new VaultError(
        "rootfs.download_too_long",
        `the download did not finish within ${Math.round(maxMs / 1000)} s`,
        "serve the tarball from closer to the machine, or upload it with `rootfs`",
      ),
    ), maxMs);
  const aborted = () => {
    const r = ctl.signal.reason;
    return isVaultError(r) ? r : cancelledError(String(r));
  };
  try {
    let target = checkProvisionUrl(url);
    let res: Response | undefined;
    for (let hop = 0; hop <= 5; hop++) {
      const headers = setTimeout(() =>
        ctl.abort(
          new VaultError(
            "rootfs.source_stalled",
            `${target.origin} sent no response for ${idleMs / 1000} s`,
            "check the server, then provision again; the previous rootfs serves",
          ),
        ), idleMs);
      res = await fetch(target, {
        redirect: "manual",
        headers: { "accept-encoding": "identity" },
        signal: ctl.signal,
      }).catch((err) => {
        if (ctl.signal.aborted) throw aborted();
        throw new VaultError(
          "rootfs.download_failed",
          `cannot fetch ${target.origin}${target.pathname}: ${
            err instanceof Error ? err.message : err
          }`,
        );
      }).finally(() => clearTimeout(headers));
      if (res.status >= 300 && res.status < 400 && res.headers.get("location")) {
        await res.body?.cancel();
        target = checkProvisionUrl(new URL(res.headers.get("location")!, target).href);
        res = undefined;
        continue;
      }
      break;
    }
    if (!res) throw new VaultError("rootfs.download_failed", "too many redirects");
    if (!res.ok || !res.body) {
      await res.body?.cancel();
      throw new VaultError(
        "rootfs.download_failed",
        `${target.origin}${target.pathname} answered ${res.status} ${res.statusText}`,
      );
    }
    // A Content-Encoding makes fetch decode the body: its length is then not the file's.
    const length = res.headers.get("content-encoding")
      ? NaN
      : Number(res.headers.get("content-length") ?? NaN);
    const expected = Number.isSafeInteger(length) && length >= 0 ? length : undefined;
    out.queue({
      type: "progress",
      phase: "download",
      done: 0,
      ...(expected !== undefined ? { total: expected } : {}),
    });
    const result = await ctx.store.provision(res.body, {
      signal: ctl.signal,
      idleMs,
      expectedSha256: sha256,
      expectedSize: expected,
      limits: ctx.limits,
      beforeSwap: ctx.beforeSwap,
      afterSwap: ctx.afterSwap,
      onProgress: out.onProgress,
    });
    out.queue(doneMessage(result));
  } catch (err) {
    out.queue(errorMessage(err));
  } finally {
    clearTimeout(total);
    signal?.removeEventListener("abort", onSignal);
  }
  await out.flush();
}
