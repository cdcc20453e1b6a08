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
import type { ProvisionProgress, ProvisionResult, RootfsStore } from "./store.ts";

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
) {
  let chain = Promise.resolve();
  let last = 0;
  let lastPhase = "";
  const queue = (m: ProvisionMessage) => {
    chain = chain.then(() => send(m)).catch(() => {});
  };
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
    flush: () => chain,
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
): Promise<void> {
  const out = progressSender((m) => writer.send(m), ctx.progressIntervalMs ?? 200, "receive");
  try {
    const req = await reader.message(UploadRequest, "upload request");
    const result = await ctx.store.provision(reader.raw(), {
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
  await out.flush();
  await writer.close();
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
): Promise<void> {
  const out = progressSender(send, ctx.progressIntervalMs ?? 200, "download");
  try {
    let target = checkProvisionUrl(url);
    let res: Response | undefined;
    for (let hop = 0; hop <= 5; hop++) {
      res = await fetch(target, {
        redirect: "manual",
        headers: { "accept-encoding": "identity" },
      }).catch((err) => {
        throw new VaultError(
          "rootfs.download_failed",
          `cannot fetch ${target.origin}${target.pathname}: ${
            err instanceof Error ? err.message : err
          }`,
        );
      });
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
    const result = await ctx.store.provision(res.body, {
      expectedSha256: sha256,
      expectedSize: Number.isSafeInteger(length) && length >= 0 ? length : undefined,
      limits: ctx.limits,
      beforeSwap: ctx.beforeSwap,
      afterSwap: ctx.afterSwap,
      onProgress: out.onProgress,
    });
    out.queue(doneMessage(result));
  } catch (err) {
    out.queue(errorMessage(err));
  }
  await out.flush();
}
