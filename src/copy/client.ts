/**
 * Client side of `fly-vault cp [-r] SRC… DEST`: checks the sources, streams
 * a tar over one copy stream with a progress bar, and for downloads unpacks
 * into a staging directory that is renamed into place only once the whole
 * archive arrived.
 *
 * @module
 */
import cliProgress from "cli-progress";
import process from "node:process";
import { VaultError } from "../errors/mod.ts";
import {
  type ByteStream,
  CopyReply,
  FrameReader,
  FrameWriter,
  StreamTag,
} from "../protocol/mod.ts";
import { commitStaging, commitTarget, discardStaging, makeStaging } from "./commit.ts";
import { type CopyPlan, splitPath, treeSize } from "./paths.ts";
import { createArchive, extractArchive } from "./tar.ts";

/** Opens a stream of kind `tag` on the current connection (tag byte already written). */
export type OpenStream = (tag: StreamTag) => Promise<ByteStream>;

/** Options for {@link runCopy}. */
export interface CopyOptions {
  recursive?: boolean;
  /** Show a progress bar on stderr (default: when stderr is a terminal). */
  progress?: boolean;
  /** Called with archive bytes moved so far (tests, custom progress). */
  onProgress?: (bytes: number, total: number) => void;
}

/** What a copy did. */
export interface CopyResult {
  direction: "upload" | "download";
  /** Top-level entries committed. */
  entries: number;
  /** Archive bytes moved. */
  bytes: number;
}

function progressBar(enabled: boolean, label: string) {
  if (!enabled) return null;
  const bar = new cliProgress.SingleBar({
    format: `${label} [{bar}] {percentage}% {done}/{all} MiB {speed} MiB/s`,
    stream: process.stderr,
    hideCursor: true,
    clearOnComplete: false,
  }, cliProgress.Presets.shades_classic);
  const started = performance.now();
  const mib = (n: number) => (n / 1048576).toFixed(1);
  return {
    start(total: number) {
      bar.start(Math.max(total, 1), 0, { done: "0.0", all: mib(total), speed: "0" });
    },
    update(bytes: number, total: number) {
      const secs = (performance.now() - started) / 1000;
      bar.update(Math.min(bytes, Math.max(total, 1)), {
        done: mib(Math.min(bytes, total)),
        all: mib(total),
        speed: secs > 0 ? mib(bytes / secs) : "0",
      });
    },
    stop: () => bar.stop(),
  };
}

function replyError(reply: { code: string; message: string; hint?: string }): VaultError {
  return new VaultError(reply.code, reply.message, reply.hint ?? "");
}

/** Runs one copy described by `plan` (from {@link planCopy}) over a new copy stream. */
export async function runCopy(
  openStream: OpenStream,
  plan: CopyPlan,
  opts: CopyOptions = {},
): Promise<CopyResult> {
  const show = opts.progress ?? Deno.stderr.isTerminal();
  return plan.direction === "upload"
    ? await upload(openStream, plan, opts, show)
    : await download(openStream, plan, opts, show);
}

async function upload(
  openStream: OpenStream,
  plan: CopyPlan,
  opts: CopyOptions,
  show: boolean,
): Promise<CopyResult> {
  let total = 0;
  const names = new Set<string>();
  for (const source of plan.sources) {
    const info = await Deno.lstat(source).catch(() => null);
    if (!info) {
      throw new VaultError("copy.no_source", `${source}: no such file or directory`, "");
    }
    if (info.isDirectory && !opts.recursive) {
      throw new VaultError("copy.is_directory", `${source} is a directory`, "use cp -r");
    }
    const name = splitPath(source)[1];
    if (names.has(name)) {
      throw new VaultError(
        "copy.duplicate_name",
        `two sources are named ${name}`,
        "copy them separately",
      );
    }
    names.add(name);
    total += await treeSize(source);
  }
  const stream = await openStream(StreamTag.copy);
  const writer = new FrameWriter(stream.writable);
  const reader = new FrameReader(stream.readable);
  await writer.send({
    type: "copy",
    direction: "upload",
    dest: plan.dest,
    count: plan.sources.length,
    recursive: opts.recursive ?? false,
  });
  const ready = await reader.message(CopyReply, "copy reply");
  if (ready.type === "error") throw replyError(ready);
  const bar = progressBar(show, `${plan.vault}:${plan.dest}`);
  bar?.start(total);
  const tar = createArchive(plan.sources);
  let bytes = 0;
  try {
    for await (const chunk of tar.stdout) {
      bytes += chunk.length;
      await writer.data(1, chunk);
      bar?.update(bytes, total);
      opts.onProgress?.(bytes, total);
    }
    await tar.done();
  } catch (err) {
    tar.kill();
    await writer.abort(err).catch(() => {});
    await reader.cancel().catch(() => {});
    bar?.stop();
    throw err instanceof VaultError ? err : new VaultError(
      "copy.lost",
      `copy interrupted: ${(err as Error).message}`,
      "nothing was written under the final name; copy again",
    );
  }
  await writer.send({ type: "copy_end", bytes });
  bar?.update(total, total);
  bar?.stop();
  const done = await reader.message(CopyReply, "copy result").catch((err) => {
    throw new VaultError(
      "copy.lost",
      `connection lost before the vault confirmed the copy (${err.message})`,
      "check the destination and copy again if it is missing",
    );
  });
  await writer.close();
  if (done.type === "error") throw replyError(done);
  if (done.type !== "copy_done") {
    throw new VaultError("copy.protocol", `unexpected ${done.type}`, "");
  }
  return { direction: "upload", entries: done.entries, bytes };
}

async function download(
  openStream: OpenStream,
  plan: CopyPlan,
  opts: CopyOptions,
  show: boolean,
): Promise<CopyResult> {
  const target = await commitTarget(plan.dest, plan.sources.length);
  if (target.dir.endsWith("/") && target.dir.length > 1) {
    target.dir = target.dir.replace(/\/+$/, "");
  }
  const stream = await openStream(StreamTag.copy);
  const writer = new FrameWriter(stream.writable);
  const reader = new FrameReader(stream.readable);
  await writer.send({
    type: "copy",
    direction: "download",
    sources: plan.sources,
    recursive: opts.recursive ?? false,
  });
  const ready = await reader.message(CopyReply, "copy reply");
  if (ready.type === "error") throw replyError(ready);
  const total = ready.type === "copy_ready" ? ready.total ?? 0 : 0;
  let staging: string | null = await makeStaging(target);
  const bar = progressBar(show, `${plan.dest}`);
  bar?.start(total);
  try {
    const tar = extractArchive(staging);
    let bytes = 0;
    let complete = false;
    try {
      while (true) {
        const frame = await reader.next();
        if (frame === null) break;
        if (frame.kind === "data") {
          bytes += frame.bytes.length;
          await tar.stdin.write(frame.bytes);
          bar?.update(bytes, total);
          opts.onProgress?.(bytes, total);
          continue;
        }
        const msg = CopyReply.parse(frame.message);
        if (msg.type === "error") throw replyError(msg);
        if (msg.type === "copy_end") {
          if (msg.bytes !== bytes) {
            throw new VaultError(
              "copy.truncated",
              `got ${bytes} of ${msg.bytes} bytes`,
              "copy again",
            );
          }
          complete = true;
          break;
        }
      }
    } catch (err) {
      tar.kill();
      await tar.done().catch(() => {});
      if (err instanceof VaultError && !err.code.startsWith("protocol.")) throw err;
      throw new VaultError(
        "copy.lost",
        `copy interrupted: ${(err as Error).message}`,
        "nothing was written under the final name; copy again",
      );
    }
    if (!complete) {
      tar.kill();
      await tar.done().catch(() => {});
      throw new VaultError(
        "copy.lost",
        "the connection ended before the copy was complete",
        "nothing was written under the final name; copy again",
      );
    }
    await tar.stdin.close().catch(() => {});
    await tar.done();
    const entries = await commitStaging(staging, target);
    staging = null;
    bar?.update(total, total);
    await writer.close();
    await reader.cancel().catch(() => {});
    return { direction: "download", entries, bytes };
  } finally {
    bar?.stop();
    await discardStaging(staging);
  }
}
