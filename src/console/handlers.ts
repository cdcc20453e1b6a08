/**
 * The init-side handlers this area provides, bundled for the server's
 * `handlers` option: console, `exec -t`, forward and copy, plus the session
 * list for the control stream's `sessions` request.
 *
 * @module
 */
import type { ExecRequest, FrameReader, FrameWriter, SessionInfo } from "../protocol/mod.ts";
import { serveCopy } from "../copy/mod.ts";
import { serveForward } from "../forward/mod.ts";
import { createConsoleSessions, serveConsole, serveExecTty } from "./sessions.ts";

/** The part of init's server context these handlers use. */
export interface HandlerContext {
  store: { readonly rootfsDir: string };
  execRequest?: ExecRequest;
}

type Handler = (reader: FrameReader, writer: FrameWriter, ctx: HandlerContext) => Promise<void>;

/** Handlers and session list, ready for `startInitServer({ handlers, sessions })`. */
export interface InteractiveHandlers {
  handlers: { console: Handler; execTty: Handler; forward: Handler; copy: Handler };
  sessions: () => SessionInfo[];
  /** Hangs up every console session and resolves when their shells are gone (shutdown, swap). */
  closeAll(): Promise<void>;
}

/** Creates one session table and the handlers that share it. */
export function createInteractiveHandlers(
  opts: { replayBytes?: number } = {},
): InteractiveHandlers {
  const sessions = createConsoleSessions(opts);
  return {
    handlers: {
      console: (r, w, ctx) => serveConsole(r, w, { rootfsDir: ctx.store.rootfsDir, sessions }),
      execTty: async (r, w, ctx) => {
        if (!ctx.execRequest) throw new Error("execTty handler called without the exec request");
        await serveExecTty(ctx.execRequest, r, w, { rootfsDir: ctx.store.rootfsDir });
      },
      forward: (r, w) => serveForward(r, w),
      copy: (r, w, ctx) => serveCopy(r, w, { rootfsDir: ctx.store.rootfsDir }),
    },
    sessions: () => sessions.list(),
    closeAll: () => sessions.closeAll(),
  };
}
