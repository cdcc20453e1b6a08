/**
 * Connecting to a vault: attest and pin (transport), then authenticate
 * with the access token on the control stream. The token is sent only on
 * a connection whose pin was just verified.
 *
 * @module
 */
import { VaultError } from "../errors/mod.ts";
import type { JwksCache } from "../attest/mod.ts";
import {
  Auth,
  type AuthOk,
  AuthReply,
  type ByteStream,
  FrameReader,
  FrameWriter,
  Hello,
  PROTOCOL_VERSION,
  StreamTag,
} from "../protocol/mod.ts";
import {
  createDeadline,
  DEFAULT_CONNECT_TIMEOUT_MS,
  type DialEvent,
  dialVault,
  type VaultConnection,
} from "../transport/mod.ts";
import { accessTokenOf, type ClientConfig, type VaultConfig } from "./config.ts";

/** The client's name in Hello, for the server's logs. */
export const CLIENT_ID = "fly-vault-ts/0.1.0";

/** An authenticated session with a vault. */
export interface VaultSession {
  name: string;
  conn: VaultConnection;
  /** What the server said when it let us in (state, machine id). */
  welcome: AuthOk;
  /** True when this connect had to attest (first contact, or the machine restarted). */
  attested: boolean;
  /** True when this session goes through the vault's master (persistent client). */
  viaMaster?: boolean;
  /** The control stream, kept open for Status/Provision/Sessions. */
  control: { reader: FrameReader; writer: FrameWriter };
  openStream(tag: StreamTag): Promise<ByteStream>;
  /** Closes the connection and waits for the close to leave. */
  close(): Promise<void>;
}

// The verifier (jose) loads only when a connect has to attest; pinned reconnects skip it.
let jwksCache: JwksCache | undefined;
async function verifier() {
  const attest = await import("../attest/mod.ts");
  jwksCache ??= attest.createJwksCache();
  return { verify: attest.verifyAttestationToken, cache: jwksCache };
}

/** Attest (when needed), pin, authenticate. */
export async function connectVault(
  config: ClientConfig,
  name: string,
  vault: VaultConfig,
  opts: { onEvent?: (e: DialEvent | { type: "authenticated" }) => void; timeoutMs?: number } = {},
): Promise<VaultSession> {
  const token = accessTokenOf(name, vault);
  // One deadline from the first packet to the auth reply: a peer that stalls any step
  // (keep-alives would otherwise keep a silent connection open forever) fails us in time.
  const deadline = createDeadline(opts.timeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS, vault.address);
  const { conn, attested } = await dialVault({
    name,
    address: vault.address,
    machineId: vault.machine_id,
    expected: { org: vault.org, app: vault.app, issuer: vault.oidc_issuer },
    knownVaultsPath: config.knownVaultsPath,
    deadline,
    onEvent: opts.onEvent,
    verifyAttestation: async (jwt, audience) => {
      const { verify, cache } = await verifier();
      return await verify(jwt, {
        issuerBase: vault.oidc_issuer,
        org: vault.org,
        app: vault.app,
        machineId: vault.machine_id,
        audience,
        allowInsecureIssuer: vault.local_simulation,
      }, cache);
    },
  });
  try {
    const { reader, writer, reply } = await deadline.race(
      (async () => {
        const stream = await conn.openStream(StreamTag.control);
        const reader = new FrameReader(stream.readable);
        const writer = new FrameWriter(stream.writable);
        await writer.send(
          Hello.parse({ type: "hello", protocol: PROTOCOL_VERSION, client: CLIENT_ID }),
        );
        await writer.send(Auth.parse({ type: "auth", token }));
        return { reader, writer, reply: await reader.message(AuthReply, "authentication reply") };
      })(),
      "answer authentication",
    );
    if (reply.type === "error") {
      throw new VaultError(reply.code, reply.message, reply.hint ?? "");
    }
    opts.onEvent?.({ type: "authenticated" });
    return {
      name,
      conn,
      welcome: reply,
      attested,
      control: { reader, writer },
      openStream: (tag) => conn.openStream(tag),
      close: () => conn.close(0, "bye"),
    };
  } catch (err) {
    await conn.close(0, "failed");
    throw err;
  }
}
