/**
 * Console attach with resume. Extends the base {@link ConsoleRequest} with
 * the output offset the client has already shown, so a re-attach after a
 * lost connection sends only what the client missed (no duplicated screen),
 * and {@link Attached} with the offset the data that follows starts at.
 *
 * Heartbeat: an init that offers it (`heartbeat: true` in the attach reply)
 * answers each {@link ConsolePing} with a {@link ConsolePong}, so a client
 * notices a dead path in seconds instead of waiting out QUIC's idle timeout.
 * Both also carry `input`, the keyboard bytes the session has received so
 * far: after switching connections the client re-sends exactly the bytes the
 * old path swallowed, neither losing nor repeating a keystroke.
 *
 * @module
 */
import { z } from "zod";
import {
  Attached,
  ConsoleRequest,
  Eof,
  ErrorMessage,
  Exit,
  Resize,
  SignalRequest,
} from "./messages.ts";

/** {@link ConsoleRequest} plus `offset`: output bytes of this session the client already has. */
export const ConsoleAttach = ConsoleRequest.extend({
  offset: z.number().int().min(0).optional(),
});
export type ConsoleAttach = z.infer<typeof ConsoleAttach>;

const Count = z.number().int().min(0);

/**
 * {@link Attached} plus `offset`: the session output position of the next data byte;
 * `heartbeat`: pings are answered; `input`: keyboard bytes the session has received.
 */
export const AttachedAt = Attached.extend({
  offset: Count.optional(),
  heartbeat: z.boolean().optional(),
  input: Count.optional(),
});

/** Client → init on an attached console: are you there? */
export const ConsolePing = z.strictObject({ type: z.literal("ping"), seq: Count });
export type ConsolePing = z.infer<typeof ConsolePing>;
/** Init → client: the answer to ping `seq`, with the session's input bytes received so far. */
export const ConsolePong = z.strictObject({ type: z.literal("pong"), seq: Count, input: Count });
export type ConsolePong = z.infer<typeof ConsolePong>;

/** Everything init sends on a console stream. */
export const ConsoleReply = z.discriminatedUnion("type", [
  AttachedAt,
  Exit,
  ErrorMessage,
  ConsolePong,
]);
export type ConsoleReply = z.infer<typeof ConsoleReply>;

/** Everything a client may send on a console stream after the attach request. */
export const ConsoleInput = z.discriminatedUnion("type", [Resize, Eof, SignalRequest, ConsolePing]);
export type ConsoleInput = z.infer<typeof ConsoleInput>;
