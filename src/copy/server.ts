/**
 * Init side of `cp`. Init touches no path of the rootfs itself: an agent
 * inside the vault (agent.ts), entered as exec enters, resolves every path
 * as the tenant sees it and runs the vault's tar. Uploads unpack into a
 * staging directory next to the destination and are renamed into place only
 * once the archive is complete; downloads stream a tar of the sources.
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
import { answer, startAgent } from "./agent.ts";
import { tarError } from "./tar.ts";
import { inVaultPaths } from "../init/vault_paths.ts";

function errorMessage(err: unknown) {
  if (isVaultError(err)) {
    return {
      type: "error",
      code: err.code,
      message: inVaultPaths(err.message),
      hint: inVaultPaths(err.hint || undefined),
    };
  }
  return {
    type: "error",
    code: "copy.failed",
    message: inVaultPaths(String((err as Error)?.message ?? err)),
  };
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

/** A length-prefixed frame for the agent's stdin (length 0 = commit). */
function agentFrame(bytes: Uint8Array): Uint8Array {
  const out = new Uint8Array(4 + bytes.length);
  new DataView(out.buffer).setUint32(0, bytes.length);
  out.set(bytes, 4);
  return out;
}

async function receive(
  req: CopyRequest,
  reader: FrameReader,
  writer: FrameWriter,
  rootfs: string,
): Promise<void> {
  if (!req.dest) throw new VaultError("copy.usage", "upload without a destination", "");
  const staging = `.fly-vault-cp.${crypto.randomUUID().slice(0, 12)}`;
  const agent = await startAgent(rootfs, ["upload", req.dest, String(req.count), staging], true);
  const stdin = agent.stdin!;
  // Closing the agent's stdin without the commit frame makes it remove its staging directory.
  const finish = async () => {
    await stdin.close().catch(() => {});
    await agent.done();
  };
  try {
    await answer(agent, /^READY$/, "write");
    await writer.send({ type: "copy_ready" });
    let complete = false;
    let received = 0;
    let agentGone = false;
    while (true) {
      const frame = await reader.next();
      if (frame === null) break;
      if (frame.kind === "data") {
        received += frame.bytes.length;
        if (agentGone || frame.bytes.length === 0) continue;
        // A write fails when the agent stopped (tar failed): its answer says why.
        agentGone = await stdin.write(agentFrame(frame.bytes)).then(() => false, () => true);
        if (agentGone) break;
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
    if (agentGone) await answer(agent, /^DONE\t/, "write");
    if (!complete) return; // the client went away mid-copy: nothing is committed
    await stdin.write(agentFrame(new Uint8Array(0))).catch(() => {});
    const done = await answer(agent, /^DONE\t(\d+)$/, "write");
    await writer.send({ type: "copy_done", entries: Number(done[1]) });
  } finally {
    await finish();
  }
}

async function send(
  req: CopyRequest,
  reader: FrameReader,
  writer: FrameWriter,
  rootfs: string,
): Promise<void> {
  const agent = await startAgent(
    rootfs,
    ["download", req.recursive ? "1" : "0", ...req.sources],
    false,
  );
  let finished = false;
  try {
    const ready = await answer(agent, /^READY\t(\d+)$/, "read");
    await writer.send({ type: "copy_ready", total: Number(ready[1]) });
    let bytes = 0;
    for await (const chunk of agent.rest()) {
      bytes += chunk.length;
      await writer.writer.write(encodeData(2, chunk));
    }
    const { code, stderr } = await agent.done();
    if (code !== 0) throw tarError(stderr, "read");
    finished = true;
    await writer.send({ type: "copy_end", bytes });
    // Wait for the client to finish (it closes its side after committing).
    await reader.next().catch(() => null);
  } finally {
    if (!finished) agent.kill();
    await agent.done();
  }
}
