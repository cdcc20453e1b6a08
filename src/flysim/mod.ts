/**
 * flysim: a local stand-in for the few Fly.io parts fly-vault uses — the
 * Machines API, the per-org OIDC issuer and JWKS, each machine's token
 * socket, and machines as local processes running the real init with a
 * directory as their volume and a loopback address as their 6PN address.
 * It is the only code that knows it is not the real Fly.
 *
 * @module
 */
export { type OidcIssuer, startOidcIssuer } from "./oidc.ts";
export { serveTokenSocket } from "./token_socket.ts";
export { type ForgeContext, forgeries, type Forgery } from "./forge.ts";
export {
  createInitLauncher,
  type LaunchedMachine,
  MACHINE_PORT,
  type MachineLaunch,
  type MachineLauncher,
} from "./runner.ts";
export {
  BOOT_SCRIPT,
  bootArgv,
  type BootPlan,
  imageArgv,
  imageEnv,
  isLocalImage,
  type UnpackedImage,
  unpackImage,
} from "./image.ts";
export { buildHostRootfs, buildHostRootfsTarball, HOST_ROOTFS_PROGRAMS } from "./host_rootfs.ts";
export {
  fakeLauncher,
  type Fault,
  type MachinesApi,
  type MachinesApiOptions,
  machineView,
  type SimEvent,
  type SimLaunched,
  type SimLauncher,
  type SimMachine,
  type SimMachineLaunch,
  type SimRequest,
  type SimVolume,
  startMachinesApi,
  volumeView,
} from "./machines_api.ts";
export { type Demo, demoStateDir, runTour, startDemo } from "./demo.ts";
export { type Flysim, startFlysim } from "./sim.ts";
