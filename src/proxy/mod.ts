/**
 * vault-proxy: one public UDP address for many tenant machines. Routes each
 * client's QUIC packets to the machine named by the SNI of its Initial
 * (`<machine_id>.vault.internal`) without terminating TLS (DESIGN §7).
 *
 * @module
 */
export {
  buildInitialClose,
  CryptoAssembler,
  type DropReason,
  initialKeys,
  parseClientHello,
  readClientInitials,
  TransportError,
} from "./initial.ts";
export {
  type Backend,
  cachedResolver,
  machineIdFromSni,
  machinesApiResolver,
  type Resolution,
  type Resolver,
  splitHostPort,
  templateResolver,
  withApiFallback,
} from "./resolver.ts";
export {
  answersHandshake,
  DEFAULT_LIMITS,
  type LogEvent,
  openFileLimit,
  type Proxy,
  type ProxyLimits,
  type ProxyOptions,
  sessionBudget,
  sourcePrefix,
  startProxy,
} from "./proxy.ts";
export type { ProxyStats } from "./metrics.ts";
export { type AdminServer, startAdmin } from "./admin.ts";
export { resolveUdpImpl, UDP_IMPLS, type UdpImpl } from "./udp.ts";
export { mmsgAvailable, mmsgStats } from "./udp_mmsg.ts";
export { runProxy, type RunProxyOptions } from "./run.ts";
