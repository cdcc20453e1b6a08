/**
 * init's QUIC server: serves the machine identity, answers attestation,
 * authenticates each connection on its control stream, then dispatches
 * every other stream by tag. Nothing but attestation is served before the
 * access token is checked.
 *
 * @module
 */
import { VaultError } from "../errors/mod.ts";
import {
  AttestRequest,
  Auth,
  type ControlReply,
  ControlRequest,
  ExecRequest,
  FrameReader,
  FrameWriter,
  Hello,
  PROTOCOL_VERSION,
  type SessionInfo,
  StreamTag,
  type VaultState,
} from "../protocol/mod.ts";
import type { MachineIdentity } from "../pki/mod.ts";
import { listenQuic, type TaggedStream, type VaultConnection } from "../transport/mod.ts";
import { type AuthThrottle, createAuthThrottle, tokensEqual } from "./auth.ts";
import { serveExec } from "./exec.ts";
import { log } from "./log.ts";

/** Where the rootfs is and what state provisioning is in. */
export interface VaultStore {
  readonly rootfsDir: string;
  status(): { state: VaultState; reason?: string; provisioned_at?: string; sha256?: string };
}

/** What a stream handler gets: the stream after its tag, and the server's context. */
export type StreamHandler = (
  reader: FrameReader,
  writer: FrameWriter,
  ctx: ServerContext,
) => Promise<void>;

/** Shared with every handler. */
export interface ServerContext {
  store: VaultStore;
  machineId: string;
  /** The authenticated peer's address, for logs. */
  peer: string;
  /** For the tty exec handler: the request already read from the stream. */
  execRequest?: ExecRequest;
}

/** Gets a Fly OIDC token for an audience (the machine's token socket, or flysim's). */
export interface TokenSource {
  get(audience: string): Promise<string>;
}

/** Everything init's server needs. */
export interface InitServerOptions {
  hostname: string;
  port: number;
  identity: MachineIdentity;
  machineId: string;
  accessToken: string;
  tokenSource: TokenSource;
  store: VaultStore;
  /** Handlers for the streams other modules implement (console, forward, upload, copy, tty exec). */
  handlers?: Partial<Record<"console" | "forward" | "upload" | "copy" | "execTty", StreamHandler>>;
  /** Control requests other modules answer. */
  sessions?: () => SessionInfo[];
  provisionUrl?: (
    url: string,
    sha256: string | undefined,
    send: (msg: ControlReply) => Promise<void>,
    ctx: ServerContext,
  ) => Promise<void>;
  throttle?: AuthThrottle;
}

/** A running server. */
export interface InitServer {
  readonly port: number;
  close(): void;
}

const CLIENT_ID = /^[\x20-\x7e]{0,128}$/;
const PRE_AUTH_MAX_FRAME = 64 * 1024;

function errorReply(err: unknown) {
  if (err instanceof VaultError) {
    return { type: "error" as const, code: err.code, message: err.message, hint: err.hint };
  }
  return { type: "error" as const, code: "internal", message: String((err as Error)?.message) };
}

/** Starts serving. Returns once the UDP socket is bound. */
export function startInitServer(opts: InitServerOptions): InitServer {
  const listener = listenQuic({
    hostname: opts.hostname,
    port: opts.port,
    certChainPem: opts.identity.chainPem,
    keyPem: opts.identity.leafKeyPem,
  });
  const throttle = opts.throttle ?? createAuthThrottle();
  (async () => {
    for await (const conn of listener.connections()) {
      serveConnection(conn, opts, throttle).catch((err) =>
        log("conn.error", { peer: conn.remoteAddr.hostname, error: String(err?.message ?? err) })
      );
    }
  })();
  log("init.listening", {
    address: `${listener.addr.hostname}:${listener.addr.port}`,
    machine_id: opts.machineId,
  });
  return { port: listener.addr.port, close: () => listener.close() };
}

async function serveConnection(
  conn: VaultConnection,
  opts: InitServerOptions,
  throttle: AuthThrottle,
): Promise<void> {
  const peer = conn.remoteAddr.hostname;
  const ctx: ServerContext = { store: opts.store, machineId: opts.machineId, peer };
  let authenticated = false;
  let controlOpened = false;
  for await (const stream of conn.incoming()) {
    // Attest and control streams are readable before authentication: keep what a stranger
    // can make us buffer small. Their messages are a few hundred bytes.
    const preAuth = stream.tag === StreamTag.attest || stream.tag === StreamTag.control;
    const reader = new FrameReader(stream.readable, preAuth ? PRE_AUTH_MAX_FRAME : undefined);
    const writer = new FrameWriter(stream.writable);
    // Whatever goes wrong on a stream, the peer hears why and the stream ends: a peer left
    // waiting on a stream nobody will answer would hang until the idle timeout.
    const fail = (event: string) => async (err: unknown) => {
      log(event, { peer, tag: stream.tag, error: String((err as Error)?.message ?? err) });
      await writer.send(errorReply(err)).catch(() => {});
      await writer.close();
      await reader.cancel();
    };
    if (stream.tag === StreamTag.attest) {
      serveAttest(reader, writer, opts).catch(fail("attest.error"));
    } else if (stream.tag === StreamTag.control && controlOpened) {
      // One control stream, one authentication attempt, per connection.
      writer.send({
        type: "error",
        code: "protocol.second_control",
        message: "this connection already has a control stream",
      }).then(() => writer.close(), () => {});
    } else if (stream.tag === StreamTag.control) {
      controlOpened = true;
      serveControl(reader, writer, opts, ctx, throttle, conn, () => authenticated = true).catch(
        fail("control.error"),
      );
    } else if (!authenticated) {
      // Every other stream needs the token first; say so and drop the stream.
      writer.send({
        type: "error",
        code: "auth.required",
        message: "authenticate on the control stream first",
      }).then(() => writer.close(), () => {});
    } else {
      dispatch(stream, reader, writer, opts, ctx).catch(fail("stream.error"));
    }
  }
}

async function serveAttest(reader: FrameReader, writer: FrameWriter, opts: InitServerOptions) {
  await reader.message(AttestRequest, "attest request");
  try {
    const token = await opts.tokenSource.get(opts.identity.audience);
    await writer.send({
      type: "attestation",
      identity: btoa(String.fromCharCode(...opts.identity.identityDer)),
      token,
    });
    log("attest.served", {});
  } catch (err) {
    log("attest.error", { error: String((err as Error)?.message ?? err) });
    await writer.send(errorReply(err));
  }
  await writer.close();
}

async function serveControl(
  reader: FrameReader,
  writer: FrameWriter,
  opts: InitServerOptions,
  ctx: ServerContext,
  throttle: AuthThrottle,
  conn: VaultConnection,
  markAuthenticated: () => void,
): Promise<void> {
  const hello = await reader.message(Hello, "hello");
  if (hello.protocol !== PROTOCOL_VERSION || !CLIENT_ID.test(hello.client)) {
    await writer.send({
      type: "error",
      code: "protocol.version",
      message: `this machine speaks protocol ${PROTOCOL_VERSION}, the client ${hello.protocol}`,
      hint: "update fly-vault on your laptop, or the machine's image, so both match",
    });
    await writer.close();
    return;
  }
  const auth = await reader.message(Auth, "auth");
  const outcome = await throttle.attempt(ctx.peer, () => tokensEqual(opts.accessToken, auth.token));
  if ("busy" in outcome) {
    log("auth.busy", { peer: ctx.peer });
    await writer.send({
      type: "error",
      code: "auth.busy",
      message: "too many authentication attempts in flight from your address",
      hint: "wait for the earlier attempts to finish, then try again",
    });
    await writer.close();
    return;
  }
  log("auth.attempt", {
    peer: ctx.peer,
    client: hello.client,
    ok: outcome.ok,
    delayed_ms: outcome.delayedMs,
  });
  if (!outcome.ok) {
    await writer.send({
      type: "error",
      code: "auth.denied",
      message: "the access token was not accepted",
      hint: "check access_token for this vault in config.toml (it is the tenant's ACCESS_TOKEN)",
    });
    await writer.close();
    // Give the reply a moment to leave before the connection goes.
    setTimeout(() => conn.close(1, "auth denied"), 200);
    return;
  }
  markAuthenticated();
  const status = opts.store.status();
  await writer.send({
    type: "auth_ok",
    protocol: PROTOCOL_VERSION,
    machine_id: opts.machineId,
    state: status.state,
    ...(status.reason ? { reason: status.reason } : {}),
  });
  const send = (msg: ControlReply) => writer.send(msg);
  while (true) {
    const frame = await reader.next();
    if (frame === null) break;
    if (frame.kind !== "message") continue;
    const req = ControlRequest.safeParse(frame.message);
    if (!req.success) {
      await send({
        type: "error",
        code: "protocol.bad_message",
        message: "unknown control request",
      });
      continue;
    }
    try {
      if (req.data.type === "status") {
        await send({ type: "status", ...opts.store.status() });
      } else if (req.data.type === "sessions") {
        await send({ type: "sessions", sessions: opts.sessions?.() ?? [] });
      } else if (req.data.type === "provision_url") {
        if (!opts.provisionUrl) throw new VaultError("provision.unsupported", "not supported");
        await opts.provisionUrl(req.data.url, req.data.sha256, send, ctx);
      }
    } catch (err) {
      await send(errorReply(err));
    }
  }
  await writer.close();
}

function notProvisioned(state: VaultState, reason?: string) {
  return {
    type: "error" as const,
    code: "vault.not_provisioned",
    message: `the vault is ${state}${reason ? ` (${reason})` : ""}, there is no rootfs to run in`,
    hint: "run `fly-vault connect <vault>` with `rootfs` or `rootfs_url` set to provision it",
  };
}

async function dispatch(
  stream: TaggedStream,
  reader: FrameReader,
  writer: FrameWriter,
  opts: InitServerOptions,
  ctx: ServerContext,
): Promise<void> {
  const handlers = opts.handlers ?? {};
  switch (stream.tag) {
    case StreamTag.exec: {
      const req = await reader.message(ExecRequest, "exec request");
      const { state, reason } = opts.store.status();
      if (state !== "ready") {
        await writer.send(notProvisioned(state, reason));
        await writer.close();
        return;
      }
      if (req.tty && handlers.execTty) {
        return await handlers.execTty(reader, writer, { ...ctx, execRequest: req });
      }
      return await serveExec(req, reader, writer, { rootfsDir: opts.store.rootfsDir });
    }
    case StreamTag.console:
    case StreamTag.forward:
    case StreamTag.upload:
    case StreamTag.copy: {
      const name = ({
        [StreamTag.console]: "console",
        [StreamTag.forward]: "forward",
        [StreamTag.upload]: "upload",
        [StreamTag.copy]: "copy",
      } as const)[stream.tag];
      const handler = handlers[name];
      if (!handler) {
        await writer.send({
          type: "error",
          code: "stream.unsupported",
          message: `this machine does not serve ${name} streams`,
          hint: "update the machine's image to a newer fly-vault",
        });
        await writer.close();
        return;
      }
      if (name !== "upload" && name !== "forward") {
        const { state, reason } = opts.store.status();
        if (state !== "ready") {
          await writer.send(notProvisioned(state, reason));
          await writer.close();
          return;
        }
      }
      return await handler(reader, writer, ctx);
    }
  }
}
