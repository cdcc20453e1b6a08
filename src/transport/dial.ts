/**
 * Attest, then pin (DESIGN §4). The access token is never this module's
 * business: it hands back a connection whose server has proven, by a
 * Fly-signed token bound to its identity CA, to be the expected machine;
 * the caller authenticates on it afterwards.
 *
 * @module
 */
import { printable, VaultError } from "../errors/mod.ts";
import { AttestReply, FrameReader, FrameWriter, StreamTag } from "../protocol/mod.ts";
import {
  attestationAudience,
  BOOTSTRAP_CA_CERT_PEM,
  derToPem,
  identityPemFromDer,
  serverNameFor,
} from "../pki/mod.ts";
import { DialError, dialQuic, type VaultConnection } from "./quic.ts";
import { type KnownVault, lookupKnownVault, rememberKnownVault } from "./known_vaults.ts";
import { assertCleanTrustStore } from "./trust_env.ts";

/** What a verified attestation says (at least). */
export interface AttestedClaims {
  /** The Fly machine the token was issued to. */
  machine_id: string;
}

/**
 * Checks an attestation token against the audience derived from the identity
 * received, and returns the verified claims.
 */
export type AttestationVerifier = (token: string, audience: string) => Promise<AttestedClaims>;

/** What the dialler reports as it goes, for progress output and tests. */
export type DialEvent =
  | { type: "pinned" }
  | { type: "attesting"; reason: "no-pin" | "pin-failed" | "config-changed" }
  | { type: "attested"; machineId: string };

/** What the config asks for; a pin is used only while it still asks for the same. */
export interface DialExpectation {
  org: string;
  app: string;
  /** The configured OIDC issuer base. */
  issuer: string;
}

/** Where and what to dial. */
export interface DialOptions {
  /** Vault name: the known_vaults key. */
  name: string;
  /** `host:port`. */
  address: string;
  /** When set, the TLS name is `<machine_id>.vault.internal` (the proxy routes by it). */
  machineId?: string;
  expected: DialExpectation;
  knownVaultsPath: string;
  verifyAttestation: AttestationVerifier;
  /** Bounds the whole dial (handshakes, attestation, pin); default 10 s. */
  timeoutMs?: number;
  /** A deadline shared with the caller's next steps (authentication); overrides `timeoutMs`. */
  deadline?: Deadline;
  onEvent?: (event: DialEvent) => void;
}

/** A pinned connection. */
export interface PinnedConnection {
  conn: VaultConnection;
  /** True when this dial attested (no pin, or the pin had gone stale). */
  attested: boolean;
  /** The machine the pin was attested for. */
  machineId: string;
}

/** One deadline for every step before authentication completes. */
export interface Deadline {
  readonly totalMs: number;
  remainingMs(): number;
  /** `work`, or `transport.timeout` naming `step` if the deadline passes first. */
  race<T>(work: Promise<T>, step: string): Promise<T>;
  /** Throws `transport.timeout` naming `step` when no time is left for it. */
  check(step: string): void;
}

/** Default bound on a whole connect, as ssh's ConnectTimeout would be. */
export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;

/** A deadline `totalMs` from now for reaching `address`. */
export function createDeadline(totalMs: number, address: string): Deadline {
  const end = performance.now() + totalMs;
  const remainingMs = () => Math.max(0, end - performance.now());
  const expired = (step: string) =>
    new VaultError(
      "transport.timeout",
      `${address} did not ${step} within ${totalMs / 1000} s`,
      "--connect-timeout bounds the whole connect; raise it if the machine is just slow. " +
        "Otherwise something that is not a working fly-vault machine answers at that address",
    );
  return {
    totalMs,
    remainingMs,
    race<T>(work: Promise<T>, step: string): Promise<T> {
      work.catch(() => {}); // the loser's rejection (its connection closed) is nobody's business
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(expired(step)), remainingMs());
      });
      return Promise.race([work, timeout]).finally(() => clearTimeout(timer));
    },
    check(step: string) {
      if (remainingMs() <= 0) throw expired(step);
    },
  };
}

const MAX_ATTESTATION_FRAME = 64 * 1024;
/** How much of an unverified peer's words we show. */
const PEER_TEXT_MAX = 200;

/** An unverified peer's words, inert and short, quoted so they never read as ours. */
function quotePeer(text: string): string {
  // Escaped quotes: the peer cannot end the quotation early and go on in our voice.
  return `"${printable(text, { maxLength: PEER_TEXT_MAX }).replaceAll('"', '\\"')}"`;
}

function fromBase64(text: string): Uint8Array<ArrayBuffer> {
  try {
    return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  } catch {
    throw new VaultError(
      "attest.malformed",
      "the server's identity certificate is not base64",
      "this is not a fly-vault server, or a broken one; do not proceed",
    );
  }
}

function sameExpectation(known: KnownVault, expected: DialExpectation): boolean {
  return known.org === expected.org && known.app === expected.app &&
    known.issuer === expected.issuer;
}

/**
 * Step 1: fetch and verify the attestation. Nothing secret is sent. Returns
 * the identity DER and the attested machine id.
 */
async function attest(
  opts: DialOptions,
  serverName: string,
  deadline: Deadline,
  previous: KnownVault | undefined,
): Promise<{ identityDer: Uint8Array<ArrayBuffer>; machineId: string }> {
  deadline.check("complete a handshake");
  const conn = await dialQuic({
    address: opts.address,
    serverName,
    caPem: BOOTSTRAP_CA_CERT_PEM,
    timeoutMs: deadline.remainingMs(),
  }).catch((err) => {
    if (!(err instanceof DialError && err.failure === "certificate")) throw err;
    throw new VaultError(
      "attest.certificate",
      `${opts.address} does not present a fly-vault identity for ${serverName}`,
      "check the vault's address and machine_id; this may not be the machine you think",
    );
  });
  try {
    const reply = await deadline.race(
      (async () => {
        const stream = await conn.openStream(StreamTag.attest);
        const writer = new FrameWriter(stream.writable);
        await writer.send({ type: "attest" });
        await writer.close();
        return await new FrameReader(stream.readable, MAX_ATTESTATION_FRAME).message(
          AttestReply,
          "attestation",
        );
      })(),
      "answer the attestation request",
    );
    if (reply.type === "error") {
      // Nothing this peer says is verified: its words are quoted as its own, never as ours.
      const hint = reply.hint ? ` (its hint, unverified: ${quotePeer(reply.hint)})` : "";
      throw new VaultError(
        "attest.server",
        `the machine at ${opts.address} refused to attest (its words, unverified: ${
          quotePeer(reply.message)
        })${hint}`,
        "if this is your vault, check its logs (fly logs): it needs its Fly OIDC token socket; " +
          "otherwise this may not be the machine you think",
      );
    }
    const der = fromBase64(reply.identity);
    try {
      await identityPemFromDer(der);
    } catch {
      throw new VaultError(
        "attest.malformed",
        "the server's identity certificate is not a fly-vault identity",
        "this is not a fly-vault server; do not proceed",
      );
    }
    const audience = await attestationAudience(der);
    const claims = await deadline.race(
      opts.verifyAttestation(reply.token, audience),
      "get its attestation verified (the issuer's keys did not arrive)",
    );
    // Like ssh's changed host key: the same name, the same config, another machine.
    if (
      opts.machineId === undefined && previous && sameExpectation(previous, opts.expected) &&
      previous.machineId !== claims.machine_id
    ) {
      throw new VaultError(
        "attest.machine_changed",
        `vault '${opts.name}' was pinned to machine ${previous.machineId}, but ${opts.address} ` +
          `now attests machine ${printable(claims.machine_id, { maxLength: 64 })} of the same app`,
        `if the vault was recreated, run fly-vault forget ${opts.name}; otherwise another ` +
          "machine is answering in its place: do not proceed",
      );
    }
    return { identityDer: der, machineId: claims.machine_id };
  } finally {
    await conn.close(0, "attested");
  }
}

/** Trusts only the pinned identity CA; rustls proves the server holds its key. */
function pin(serverName: string, identityDer: Uint8Array, address: string, deadline: Deadline) {
  deadline.check("complete the pinned handshake");
  return dialQuic({
    address,
    serverName,
    caPem: derToPem(identityDer, "CERTIFICATE"),
    timeoutMs: deadline.remainingMs(),
  });
}

/**
 * Dials a vault: reuses a pin when one was made for what the config asks
 * now and it still works; otherwise (no pin, another config, or the machine
 * restarted with a new identity) attests, pins the attested identity, and
 * only then remembers it. Every step shares one deadline. Refuses to run
 * (`transport.extra_roots`) when the process trusts roots beyond Mozilla's.
 */
export async function dialVault(opts: DialOptions): Promise<PinnedConnection> {
  // A pin excludes nothing if the process also trusts a CA we did not choose.
  assertCleanTrustStore();
  const deadline = opts.deadline ??
    createDeadline(opts.timeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS, opts.address);
  const serverName = serverNameFor(opts.machineId);
  const known = await lookupKnownVault(opts.knownVaultsPath, opts.name);
  const usable = known && known.address === opts.address &&
    sameExpectation(known, opts.expected) &&
    (opts.machineId === undefined || known.machineId === opts.machineId);
  if (known && usable) {
    try {
      const conn = await pin(serverName, known.identityDer, opts.address, deadline);
      opts.onEvent?.({ type: "pinned" });
      return { conn, attested: false, machineId: known.machineId };
    } catch (err) {
      if (err instanceof DialError && err.failure === "unreachable") throw err;
      if (err instanceof VaultError && !(err instanceof DialError)) throw err;
      // The machine restarted (new identity) or someone else answers: earn the pin again.
      // The old entry stays until then: it is what a changed machine is checked against.
      opts.onEvent?.({ type: "attesting", reason: "pin-failed" });
    }
  } else {
    opts.onEvent?.({ type: "attesting", reason: known ? "config-changed" : "no-pin" });
  }
  const { identityDer, machineId } = await attest(opts, serverName, deadline, known);
  opts.onEvent?.({ type: "attested", machineId });
  let conn: VaultConnection;
  try {
    conn = await pin(serverName, identityDer, opts.address, deadline);
  } catch (err) {
    if (err instanceof DialError && err.failure === "certificate") {
      throw new VaultError(
        "transport.pin_failed",
        `${opts.address} attested an identity but could not prove it holds its key`,
        "something between you and the machine is answering in its place; do not proceed",
      );
    }
    throw err;
  }
  await rememberKnownVault(opts.knownVaultsPath, {
    name: opts.name,
    address: opts.address,
    org: opts.expected.org,
    app: opts.expected.app,
    issuer: opts.expected.issuer,
    machineId,
    identityDer,
  });
  return { conn, attested: true, machineId };
}
