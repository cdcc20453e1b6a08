/**
 * Console attach with resume. Extends the base {@link ConsoleRequest} with
 * the output offset the client has already shown, so a re-attach after a
 * lost connection sends only what the client missed (no duplicated screen),
 * and {@link Attached} with the offset the data that follows starts at.
 *
 * @module
 */
import { z } from "zod";
import { Attached, ConsoleRequest, ErrorMessage, Exit } from "./messages.ts";

/** {@link ConsoleRequest} plus `offset`: output bytes of this session the client already has. */
export const ConsoleAttach = ConsoleRequest.extend({
  offset: z.number().int().min(0).optional(),
});
export type ConsoleAttach = z.infer<typeof ConsoleAttach>;

/** {@link Attached} plus `offset`: the session output position of the next data byte. */
export const AttachedAt = Attached.extend({
  offset: z.number().int().min(0).optional(),
});
export const ConsoleReply = z.discriminatedUnion("type", [AttachedAt, Exit, ErrorMessage]);
export type ConsoleReply = z.infer<typeof ConsoleReply>;
