/**
 * init: the tenant machine's entrypoint. Serves QUIC with a per-boot
 * identity, answers attestation, authenticates, and runs commands and
 * sessions chrooted into the rootfs.
 *
 * @module
 */
export { type InitConfig, initConfigFromEnv, runInit } from "./main.ts";
export {
  type InitServer,
  type InitServerOptions,
  type ServerContext,
  startInitServer,
  type StreamHandler,
  type TokenSource,
  type VaultStore,
} from "./server.ts";
export { createAuthThrottle, tokensEqual } from "./auth.ts";
export { chrootArgv, detectSandbox, sandboxEnv, type SandboxMode } from "./sandbox.ts";
export { log } from "./log.ts";
