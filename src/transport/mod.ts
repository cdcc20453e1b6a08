/**
 * QUIC transport: the only code that touches Deno's QUIC API. `dialVault`
 * attests then pins (DESIGN §4); `listenQuic` serves a machine identity;
 * both yield {@link VaultConnection}s of tagged byte streams.
 *
 * @module
 */
export {
  CLIENT_IDLE_TIMEOUT_MS,
  CLIENT_KEEPALIVE_MS,
  DialError,
  dialQuic,
  listenQuic,
  parseAddress,
  type PeerAddr,
  SERVER_IDLE_TIMEOUT_MS,
  type TaggedStream,
  type VaultConnection,
  type VaultListener,
} from "./quic.ts";
export {
  type AttestationVerifier,
  type AttestedClaims,
  createDeadline,
  type Deadline,
  DEFAULT_CONNECT_TIMEOUT_MS,
  type DialEvent,
  type DialExpectation,
  type DialOptions,
  dialVault,
  type PinnedConnection,
} from "./dial.ts";
export {
  assertCleanTrustStore,
  type DenoArgv,
  ownDenoArgv,
  TRUST_ENV_VARS,
  TRUST_FLAGS,
  trustFlagsIn,
  trustPollution,
} from "./trust_env.ts";
export {
  forgetKnownVault,
  type KnownVault,
  lookupKnownVault,
  readKnownVaults,
  rememberKnownVault,
} from "./known_vaults.ts";
