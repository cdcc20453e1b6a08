/**
 * Interactive consoles: the init-side session manager (PTY shells that
 * outlive connections, `exec -t`) and the client-side terminal handling
 * (raw mode, window size, ssh-style escapes, reconnect and re-attach).
 *
 * @module
 */
export {
  type ConsoleSessions,
  createConsoleSessions,
  ReplayRing,
  serveConsole,
  serveExecTty,
} from "./sessions.ts";
export { type ConsoleOptions, type ConsoleResult, type OpenStream, runConsole } from "./client.ts";
export { createEscapeParser, ESCAPE_HELP, type EscapeEvent, type EscapeParser } from "./escape.ts";
export { type LocalTerminal, processTerminal, terminalInput, withRawTerminal } from "./terminal.ts";
export {
  createInteractiveHandlers,
  type HandlerContext,
  type InteractiveHandlers,
} from "./handlers.ts";
export { type ExecTtyOptions, type ExecTtyRequest, runExecTty } from "./exec_tty.ts";
