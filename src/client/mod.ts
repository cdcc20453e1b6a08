/**
 * The fly-vault client: configuration, connecting (attest, pin,
 * authenticate) and the commands built on it.
 *
 * @module
 */
export * from "./config.ts";
export { CLIENT_ID, connectVault, type VaultSession } from "./connect.ts";
export { type ExecIo, exitStatusOf, runExec } from "./exec.ts";
export * from "./commands.ts";
export * from "./interactive.ts";
export { reconnecting, type ReconnectingSession } from "./reconnect.ts";
export { ensureCleanTrustStore, ORIGINAL_TRUST_VAR } from "./trust.ts";
