/**
 * The fly-vault wire protocol: stream tags, the frame codec and the zod
 * schemas of every message. Shared by client, init and tests; it does no I/O
 * of its own beyond reading and writing the streams it is handed.
 *
 * @module
 */
export * from "./tags.ts";
export * from "./frame.ts";
export * from "./messages.ts";
export { ProtocolError } from "./errors.ts";
export * from "./copy.ts";
export * from "./console.ts";
