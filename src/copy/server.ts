/**
 * Init side of `cp`. Remote paths are resolved inside the rootfs as the
 * chrooted tenant sees them. Uploads unpack into a staging directory next to
 * the destination and are renamed into place only once the archive is
 * complete; downloads stream a tar of the sources.
 *
 * @module
 */
import { isVaultError, VaultError } from "../errors/mod.ts";
import {
  CopyClientMessage,
  CopyRequest,
  encodeData,
  type FrameReader,
  type FrameWriter,
} from "../protocol/mod.ts";
import { commitStaging, commitTarget, discardStaging, makeStaging } from "./commit.ts";
import { resolveInRoot, treeSize } from "./paths.ts";
import { createArchive, extractArchive } from "./tar.ts";

function errorMessage(err: unknown) {
  if (isVaultError(err)) {
    return { type: "error", code: err.code, message: err.message, hint: err.hint || undefined };
  }
  return { type: "error", code: "copy.failed", message: String((err as Error)?.message ?? err) };
}

/** Serves one copy stream (tag byte already consumed). */
export async function serveCopy(
  reader: FrameReader,
  writer: FrameWriter,
  ctx: { rootfsDir: string },
): Promise<void> {
  const req = await reader.message(CopyRequest, "copy request");
  try {
    if (req.direction === "upload") await receive(req, reader, writer, ctx.rootfsDir);
    else await send(req, reader, writer, ctx.rootfsDir);
  } catch (err) {
    await writer.send(errorMessage(err)).catch(() => {});
  } finally {
    await writer.close();
    await reader.cancel().catch(() => {});
  }
}

async function receive(
  req: CopyRequest,
  reader: FrameReader,
  writer: FrameWriter,
  rootfs: string,
): Promise<void> {
  if (!req.dest) throw new VaultError("copy.usage", "upload without a destination", "");
  const host = await resolveInRoot(rootfs, req.dest);
  const target = await commitTarget(req.dest.endsWith("/") ? `${host}/` : host, req.count);
  if (target.dir.endsWith("/")) target.dir = target.dir.replace(/\/+$/, "");
  let staging: string | null = await makeStaging(target);
  try {
    const tar = extractArchive(staging);
    await writer.send({ type: "copy_ready" });
    let complete = false;
    let received = 0;
    try {
      while (true) {
        const frame = await reader.next();
        if (frame === null) break;
        if (frame.kind === "data") {
          received += frame.bytes.length;
          await tar.stdin.write(frame.bytes);
          continue;
        }
        const msg = CopyClientMessage.parse(frame.message);
        if (msg.type === "copy_end") {
          if (msg.bytes !== received) {
            throw new VaultError(
              "copy.truncated",
              `archive is ${received} bytes, the client sent ${msg.bytes}`,
              "copy again",
            );
          }
          complete = true;
          break;
        }
      }
    } catch (err) {
      tar.kill();
      throw err;
    }
    if (!complete) {
      tar.kill();
      await tar.done().catch(() => {});
      return; // the client went away mid-copy: nothing is committed
    }
    await tar.stdin.close().catch(() => {});
    await tar.done();
    const entries = await commitStaging(staging, target);
    staging = null;
    await writer.send({ type: "copy_done", entries });
  } finally {
    await discardStaging(staging);
  }
}

async function send(
  req: CopyRequest,
  reader: FrameReader,
  writer: FrameWriter,
  rootfs: string,
): Promise<void> {
  const paths: string[] = [];
  let total = 0;
  for (const source of req.sources) {
    const host = await resolveInRoot(rootfs, source, false);
    const info = await Deno.lstat(host).catch(() => null);
    if (!info) {
      throw new VaultError(
        "copy.no_source",
        `${source}: no such file or directory in the vault`,
        "",
      );
    }
    if (info.isDirectory && !req.recursive) {
      throw new VaultError("copy.is_directory", `${source} is a directory`, "use cp -r");
    }
    total += await treeSize(host);
    paths.push(host);
  }
  await writer.send({ type: "copy_ready", total });
  const tar = createArchive(paths);
  let bytes = 0;
  try {
    for await (const chunk of tar.stdout) {
      bytes += chunk.length;
      await writer.writer.write(encodeData(2, chunk));
    }
  } catch (err) {
    tar.kill();
    throw err;
  }
  await tar.done();
  await writer.send({ type: "copy_end", bytes });
  // Wait for the client to finish (it closes its side after committing).
  await reader.next().catch(() => null);
}
