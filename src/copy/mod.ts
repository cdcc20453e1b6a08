/**
 * `fly-vault cp`, both sides: a tar stream over one copy stream, committed
 * under the final name only when complete.
 *
 * @module
 */
export { type CopyOptions, type CopyResult, type OpenStream, runCopy } from "./client.ts";
export { serveCopy } from "./server.ts";
export { type CopyPlan, planCopy, splitRemote } from "./paths.ts";
