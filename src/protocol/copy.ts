/**
 * Copy stream (`fly-vault cp`). The client sends {@link CopyRequest}; the
 * server answers {@link CopyReady} or an error. The tar archive then travels
 * as data frames (upload: client → server on the stdin channel; download:
 * server → client on the stdout channel), closed by {@link CopyEnd} from the
 * sender. Only a complete archive is committed (temporary name, then
 * rename), so a cut stream never leaves a partial file under the final name.
 *
 * @module
 */
import { z } from "zod";
import { ErrorMessage } from "./messages.ts";

const RemotePath = z.string().min(1).max(4096);

/** Upload: write into `dest`. Download: send `sources`. */
export const CopyRequest = z.strictObject({
  type: z.literal("copy"),
  direction: z.enum(["upload", "download"]),
  /** Remote sources (download only). */
  sources: z.array(RemotePath).max(4096).default([]),
  /** Remote destination (upload only). */
  dest: RemotePath.optional(),
  /** Number of top-level entries the upload archive holds (decides dest-is-a-name vs dir). */
  count: z.number().int().min(0).max(4096).default(1),
  recursive: z.boolean().default(false),
});
export type CopyRequest = z.infer<typeof CopyRequest>;

/** The server is ready; `total` is the byte count of regular files it will send (download). */
export const CopyReady = z.strictObject({
  type: z.literal("copy_ready"),
  total: z.number().int().min(0).optional(),
});

/** The sender's archive is complete (`bytes` of tar sent). */
export const CopyEnd = z.strictObject({
  type: z.literal("copy_end"),
  bytes: z.number().int().min(0),
});

/** The receiver committed the copy. */
export const CopyDone = z.strictObject({
  type: z.literal("copy_done"),
  entries: z.number().int().min(0),
});

export const CopyReply = z.discriminatedUnion("type", [CopyReady, CopyEnd, CopyDone, ErrorMessage]);
export type CopyReply = z.infer<typeof CopyReply>;
/** Messages the client may send after the request. */
export const CopyClientMessage = z.discriminatedUnion("type", [CopyEnd]);
