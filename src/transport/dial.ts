/**
 * Attest, then pin (DESIGN §4). The access token is never this module's
 * business: it hands back a connection whose server has proven, by a
 * Fly-signed token bound to its identity CA, to be the expected machine;
 * the caller authenticates on it afterwards.
 *
 * @module
 */
import { VaultError } from "../errors/mod.ts";
import { AttestReply, FrameReader, FrameWriter, StreamTag } from "../protocol/mod.ts";
import {
  attestationAudience,
  BOOTSTRAP_CA_CERT_PEM,
  derToPem,
  identityPemFromDer,
  serverNameFor,
} from "../pki/mod.ts";
import { DialError, dialQuic, type VaultConnection } from "./quic.ts";
import { forgetKnownVault, lookupKnownVault, rememberKnownVault } from "./known_vaults.ts";

/** Checks an attestation token against the audience derived from the identity received. */
export type AttestationVerifier = (token: string, audience: string) => Promise<unknown>;

/** What the dialler reports as it goes, for progress output and tests. */
export type DialEvent =
  | { type: "pinned" }
  | { type: "attesting"; reason: "no-pin" | "pin-failed" }
  | { type: "attested" };

/** Where and what to dial. */
export interface DialOptions {
  /** Vault name: the known_vaults key. */
  name: string;
  /** `host:port`. */
  address: string;
  /** When set, the TLS name is `<machine_id>.vault.internal` (the proxy routes by it). */
  machineId?: string;
  knownVaultsPath: string;
  verifyAttestation: AttestationVerifier;
  timeoutMs?: number;
  onEvent?: (event: DialEvent) => void;
}

/** A pinned connection. */
export interface PinnedConnection {
  conn: VaultConnection;
  /** True when this dial attested (no pin, or the pin had gone stale). */
  attested: boolean;
}

const MAX_ATTESTATION_FRAME = 64 * 1024;

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

/** Step 1: fetch and verify the attestation. Nothing secret is sent. Returns the identity DER. */
async function attest(opts: DialOptions, serverName: string): Promise<Uint8Array<ArrayBuffer>> {
  const conn = await dialQuic({
    address: opts.address,
    serverName,
    caPem: BOOTSTRAP_CA_CERT_PEM,
    timeoutMs: opts.timeoutMs ?? 10_000,
  }).catch((err) => {
    if (!(err instanceof DialError && err.failure === "certificate")) throw err;
    throw new VaultError(
      "attest.certificate",
      `${opts.address} does not present a fly-vault identity for ${serverName}`,
      "check the vault's address and machine_id; this may not be the machine you think",
    );
  });
  try {
    const stream = await conn.openStream(StreamTag.attest);
    const writer = new FrameWriter(stream.writable);
    await writer.send({ type: "attest" });
    await writer.close();
    const reply = await new FrameReader(stream.readable, MAX_ATTESTATION_FRAME).message(
      AttestReply,
      "attestation",
    );
    if (reply.type === "error") {
      throw new VaultError(
        "attest.server",
        `the machine could not attest: ${reply.message}`,
        reply.hint ?? "check the machine's logs (fly logs); it needs its Fly OIDC token socket",
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
    await opts.verifyAttestation(reply.token, await attestationAudience(der));
    return der;
  } finally {
    await conn.close(0, "attested");
  }
}

/** Trusts only the pinned identity CA; rustls proves the server holds its key. */
function pin(opts: DialOptions, serverName: string, identityDer: Uint8Array) {
  return dialQuic({
    address: opts.address,
    serverName,
    caPem: derToPem(identityDer, "CERTIFICATE"),
    timeoutMs: opts.timeoutMs ?? 10_000,
  });
}

/**
 * Dials a vault: reuses a cached pin when one works; otherwise (no pin, or
 * the machine restarted with a new identity) attests, pins the attested
 * identity, and only then remembers it.
 */
export async function dialVault(opts: DialOptions): Promise<PinnedConnection> {
  const serverName = serverNameFor(opts.machineId);
  const known = await lookupKnownVault(opts.knownVaultsPath, opts.name, opts.address);
  if (known) {
    try {
      const conn = await pin(opts, serverName, known.identityDer);
      opts.onEvent?.({ type: "pinned" });
      return { conn, attested: false };
    } catch (err) {
      if (!(err instanceof DialError && err.failure === "certificate")) throw err;
      // The machine restarted (new identity) or someone else answers: earn the pin again.
      await forgetKnownVault(opts.knownVaultsPath, opts.name);
      opts.onEvent?.({ type: "attesting", reason: "pin-failed" });
    }
  } else {
    opts.onEvent?.({ type: "attesting", reason: "no-pin" });
  }
  const identityDer = await attest(opts, serverName);
  opts.onEvent?.({ type: "attested" });
  let conn: VaultConnection;
  try {
    conn = await pin(opts, serverName, identityDer);
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
    identityDer,
  });
  return { conn, attested: true };
}
