/**
 * Streaming, verified rootfs extraction: compressed bytes in, a complete
 * staging directory out, or a clear refusal and no staging directory.
 *
 * Pipeline (one pass, nothing buffered whole): source → sha256 + byte count
 * → gunzip (node:zlib, in-process; fed in small slices so a bomb cannot make
 * one huge output chunk) → {@link TarFilter} (validates each entry before
 * its bytes move on) → GNU tar's stdin (`tar -x --numeric-owner -p --xattrs`),
 * which gives exact fidelity (setuid modes, numeric owners, hardlinks,
 * `security.capability`). GNU tar runs on the second core while this
 * process decompresses and checks.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { statfsSync } from "node:fs";
import { createGunzip } from "node:zlib";
import { isVaultError, printable, VaultError } from "../errors/mod.ts";
import { removeTree } from "./fsutil.ts";
import { RootfsError, TarFilter } from "./tarscan.ts";

/** Bounds on what one archive may do. */
export interface ExtractLimits {
  /** Total decompressed bytes allowed. */
  maxUncompressedBytes: number;
  /** Entries allowed (skipped device nodes count too). */
  maxEntries: number;
  /** Decompressed / compressed, checked once past 16 MiB decompressed. */
  maxRatio: number;
}

/** Limits that fit any sane rootfs: 64 GiB, 4 M entries, ratio 200. */
export const DEFAULT_LIMITS: ExtractLimits = {
  maxUncompressedBytes: 64 * 2 ** 30,
  maxEntries: 4_000_000,
  maxRatio: 200,
};

/** Progress of one extraction. */
export interface ExtractProgress {
  compressedBytes: number;
  uncompressedBytes: number;
  entries: number;
  /** The expected compressed size, when known. */
  total?: number;
}

/** Options of {@link extractRootfs}. */
export interface ExtractOptions {
  /** Directory to create and extract into; must not exist; its parent must. */
  stagingDir: string;
  /** Lowercase hex sha256 of the compressed bytes; checked at the end. */
  expectedSha256?: string;
  /** Exact compressed size; more bytes are refused as they come, fewer at the end. */
  expectedSize?: number;
  limits: ExtractLimits;
  onProgress?: (p: ExtractProgress) => void;
  /** Minimum interval between progress calls (ms), default 100. */
  progressIntervalMs?: number;
  /** Free bytes to assume instead of asking the filesystem (tests). */
  spaceLeft?: number;
  /** Extraction stops with `rootfs.aborted` when this fires. */
  signal?: AbortSignal;
}

/** What a successful extraction produced. */
export interface ExtractResult {
  sha256: string;
  compressedBytes: number;
  uncompressedBytes: number;
  /** Entries extracted. */
  entries: number;
  /** Things skipped on purpose (device nodes under /dev), summarised. */
  notes: string[];
  seconds: number;
}

const SLICE = 64 * 1024;
const BATCH = 256 * 1024;
const MAX_INFLIGHT = 4 * 1024 * 1024;
const RATIO_FLOOR = 16 * 2 ** 20;

/** GNU tar's arguments for an exact extraction from stdin into `dir`. */
export function tarExtractArgs(dir: string): string[] {
  return [
    "-x",
    "-f",
    "-",
    "--numeric-owner",
    "--same-owner",
    "-p",
    "--xattrs",
    "--xattrs-include=*",
    "-C",
    dir,
  ];
}

/**
 * GNU tar converts pax names from UTF-8 to the locale's charset; under a
 * UTF-8 locale that is the identity, so tar uses the very bytes the filter
 * checked whatever locale init itself runs with.
 */
export const TAR_ENV: Record<string, string> = { LC_ALL: "C.UTF-8" };

function freeBytes(dir: string): number {
  try {
    const s = statfsSync(dir);
    return Number(s.bavail) * Number(s.bsize);
  } catch {
    return Number.MAX_SAFE_INTEGER;
  }
}

/**
 * Extracts a rootfs tar.gz from `source` into `opts.stagingDir`.
 *
 * Throws a {@link VaultError} with code `rootfs.<reason>` — `not_gzip`,
 * `truncated_gzip`, `bad_gzip`, `bomb`, `absolute_path`, `dotdot`,
 * `through_symlink`, `hardlink_escape`, `device`, `no_space`,
 * `unsupported_type`, `bad_header`, `ambiguous` (a header GNU tar could read
 * differently from the filter), `too_many_entries`, `truncated_tar`,
 * `incomplete`, `size_mismatch`, `sha256_mismatch`, `tar_failed`, `aborted`,
 * `source_failed` — after killing tar and removing the staging directory.
 */
export async function extractRootfs(
  source: ReadableStream<Uint8Array>,
  opts: ExtractOptions,
): Promise<ExtractResult> {
  const started = performance.now();
  await Deno.mkdir(opts.stagingDir, { mode: 0o755 });
  const tar = new Deno.Command("tar", {
    args: tarExtractArgs(opts.stagingDir),
    env: TAR_ENV,
    stdin: "piped",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const stderrText = new Response(tar.stderr).text().catch(() => "");
  const tarIn = tar.stdin.getWriter();
  let tarExited = false;
  const status = tar.status.then((s) => (tarExited = true, s));

  const hash = createHash("sha256");
  let compressed = 0;
  let sourceEnded = false;
  let failure: unknown;
  const skipped = new Map<string, number>();
  const gunzip = createGunzip({ chunkSize: SLICE });
  const sourceReader = source.getReader();

  const fail = (err: unknown) => {
    failure ??= err;
    gunzip.destroy();
    sourceReader.cancel().catch(() => {});
  };
  const onAbort = () => fail(new RootfsError("aborted", "provisioning was cancelled"));
  opts.signal?.addEventListener("abort", onAbort, { once: true });
  if (opts.signal?.aborted) onAbort();

  const progressEvery = opts.progressIntervalMs ?? 100;
  let lastProgress = 0;
  const filter = new TarFilter({
    maxEntries: opts.limits.maxEntries,
    spaceLeft: opts.spaceLeft ?? freeBytes(opts.stagingDir),
    onSkip: (e, why) => {
      skipped.set(why, (skipped.get(why) ?? 0) + 1);
      void e;
    },
  }, (bytes) => forward(bytes));

  let batch = new Uint8Array(BATCH);
  let batchFill = 0;
  const full: Uint8Array[] = [];
  function forward(bytes: Uint8Array) {
    let off = 0;
    while (off < bytes.length) {
      const n = Math.min(BATCH - batchFill, bytes.length - off);
      batch.set(bytes.subarray(off, off + n), batchFill);
      batchFill += n;
      off += n;
      if (batchFill === BATCH) {
        full.push(batch);
        batch = new Uint8Array(BATCH);
        batchFill = 0;
      }
    }
  }
  // Writes stay in flight while the next chunk is decompressed, so this process and tar
  // work at the same time; at most MAX_INFLIGHT bytes wait in the queue.
  const inflight: Promise<void>[] = [];
  async function send(buf: Uint8Array) {
    const p = tarIn.write(buf);
    p.catch(() => {}); // awaited below; this only keeps a failure from going unhandled
    inflight.push(p);
    while (inflight.length * BATCH > MAX_INFLIGHT) await inflight.shift();
  }
  async function flush(all: boolean) {
    while (full.length) await send(full.shift()!);
    if (all) {
      if (batchFill > 0) await send(batch.slice(0, batchFill));
      batchFill = 0;
      while (inflight.length) await inflight.shift();
    }
  }

  const pump = (async () => {
    let first = true;
    for (;;) {
      let r: ReadableStreamReadResult<Uint8Array>;
      try {
        r = await sourceReader.read();
      } catch (err) {
        if (failure) return;
        throw new RootfsError("source_failed", `reading the tarball failed: ${errText(err)}`);
      }
      if (failure) return;
      if (r.done) break;
      const chunk = r.value;
      if (chunk.length === 0) continue;
      if (first) {
        first = false;
        if (chunk[0] !== 0x1f || (chunk.length > 1 && chunk[1] !== 0x8b)) {
          throw new RootfsError(
            "not_gzip",
            "the tarball is not gzip-compressed (no gzip magic)",
            undefined,
            "provision a .tar.gz (fly-vault build writes one)",
          );
        }
      }
      compressed += chunk.length;
      if (opts.expectedSize !== undefined && compressed > opts.expectedSize) {
        throw new RootfsError(
          "size_mismatch",
          `received more than the announced ${opts.expectedSize} bytes`,
        );
      }
      hash.update(chunk);
      for (let off = 0; off < chunk.length; off += SLICE) {
        if (failure) return;
        if (!gunzip.write(chunk.subarray(off, off + SLICE))) {
          await new Promise<void>((resolve) => {
            const done = () => (gunzip.off("drain", done), gunzip.off("close", done), resolve());
            gunzip.on("drain", done);
            gunzip.on("close", done);
          });
        }
      }
    }
    sourceEnded = true;
    if (compressed === 0) {
      throw new RootfsError("not_gzip", "the tarball is empty");
    }
    if (opts.expectedSize !== undefined && compressed < opts.expectedSize) {
      throw new RootfsError(
        "incomplete",
        `the upload ended after ${compressed} of ${opts.expectedSize} bytes`,
        undefined,
        "the connection was probably interrupted; provision again",
      );
    }
    gunzip.end();
  })().catch((err) => fail(err));

  const consume = (async () => {
    try {
      for await (const chunk of gunzip as AsyncIterable<Uint8Array>) {
        if (failure) return;
        const total = filter.bytes + chunk.length;
        if (total > opts.limits.maxUncompressedBytes) {
          throw new RootfsError(
            "bomb",
            `decompresses past the limit of ${opts.limits.maxUncompressedBytes} bytes`,
          );
        }
        if (total > RATIO_FLOOR && total > opts.limits.maxRatio * compressed) {
          throw new RootfsError(
            "bomb",
            `decompresses more than ${opts.limits.maxRatio}× its compressed size (gzip bomb)`,
          );
        }
        filter.push(chunk);
        await flush(false);
        const now = performance.now();
        if (opts.onProgress && now - lastProgress >= progressEvery) {
          lastProgress = now;
          opts.onProgress({
            compressedBytes: compressed,
            uncompressedBytes: filter.bytes,
            entries: filter.entries,
            total: opts.expectedSize,
          });
        }
      }
    } catch (err) {
      if (failure) return;
      if (isVaultError(err)) throw err;
      if (tarExited || /broken pipe|closed/i.test(errText(err))) {
        throw new RootfsError("tar_failed", `tar stopped: ${await tarError(stderrText)}`);
      }
      const msg = errText(err);
      if (sourceEnded && /unexpected end/i.test(msg)) {
        throw new RootfsError("truncated_gzip", "the gzip stream is truncated");
      }
      throw new RootfsError("bad_gzip", `the gzip stream is corrupt: ${msg}`);
    }
    if (failure) return;
    filter.finish();
    await flush(true);
    await tarIn.close();
  })().catch((err) => fail(err));

  await Promise.all([pump, consume]);
  opts.signal?.removeEventListener("abort", onAbort);

  try {
    if (failure) throw failure;
    const st = await status;
    if (!st.success) {
      const text = await tarError(stderrText);
      throw new RootfsError(
        /No space left/i.test(text) ? "no_space" : "tar_failed",
        `tar failed: ${text}`,
      );
    }
    const sha256 = hash.digest("hex");
    if (opts.expectedSize !== undefined && compressed !== opts.expectedSize) {
      throw new RootfsError(
        "size_mismatch",
        `got ${compressed} bytes, expected ${opts.expectedSize}`,
      );
    }
    if (opts.expectedSha256 !== undefined && sha256 !== opts.expectedSha256.toLowerCase()) {
      throw new RootfsError(
        "sha256_mismatch",
        `sha256 is ${sha256}, expected ${opts.expectedSha256}`,
        undefined,
        "the tarball changed or was corrupted in transit; check the source and provision again",
      );
    }
    opts.onProgress?.({
      compressedBytes: compressed,
      uncompressedBytes: filter.bytes,
      entries: filter.entries,
      total: opts.expectedSize,
    });
    return {
      sha256,
      compressedBytes: compressed,
      uncompressedBytes: filter.bytes,
      entries: filter.entries,
      notes: [...skipped].map(([why, n]) => `${n} ${why.replace(/ skipped$/, "")} node(s) skipped`),
      seconds: (performance.now() - started) / 1000,
    };
  } catch (err) {
    if (!tarExited) {
      try {
        tar.kill("SIGKILL");
      } catch { /* already gone */ }
    }
    await tarIn.abort().catch(() => {});
    await status.catch(() => {});
    await removeTree(opts.stagingDir).catch(() => {});
    if (err instanceof VaultError) throw err;
    throw new RootfsError("extract_failed", `extraction failed: ${errText(err)}`);
  }
}

function errText(err: unknown): string {
  // OS and library messages can quote paths from the archive.
  return printable(err instanceof Error ? err.message : String(err));
}

async function tarError(stderr: Promise<string>): Promise<string> {
  const text = (await stderr).trim();
  const lines = text.split("\n").filter((l) => l.trim());
  // tar quotes the archive's names in its messages, but not necessarily inertly.
  return printable(lines.slice(-5).join("; "), { maxLength: 2000 }) || "no message";
}
