/**
 * init's QUIC server: serves the machine identity, answers attestation,
 * authenticates each connection on its control stream, then dispatches
 * every other stream by tag. Nothing but attestation is served before the
 * access token is checked.
 *
 * @module
 */
import { VaultError } from "../errors/mod.ts";
import { inVaultPaths } from "./vault_paths.ts";
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
import { createCollector } from "./gc.ts";
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
  /** Bounds on what unauthenticated peers may hold (see {@link PreAuthLimits}). */
  preAuth?: Partial<PreAuthLimits>;
  /** Told of each authenticated connection (idle suspend); the returned function on its close. */
  activity?: { connected(): () => void };
}

/**
 * What strangers may make init hold before they authenticate, so its memory
 * stays bounded under a handshake flood (like sshd's MaxStartups and
 * LoginGraceTime). Handshakes beyond `maxHandshakes` are refused before any
 * state is made for them; a connection that has not authenticated within
 * `deadlineMs` is closed; when `maxUnauthenticated` connections are held, a
 * new one evicts the oldest of the source holding the most. Evicting leaks
 * nothing to a guesser: a right token is answered at once, so a connection
 * still waiting is already known to have guessed wrong. Twenty guessers hold
 * twenty connections, far below the bound.
 */
export interface PreAuthLimits {
  /** TLS handshakes in flight (default 256). */
  maxHandshakes: number;
  /** Established connections not yet authenticated (default 256). */
  maxUnauthenticated: number;
  /** From the handshake's end to `auth_ok` (default 10 s). */
  deadlineMs: number;
  /** Attest streams one connection may open (default 4). */
  maxAttestPerConnection: number;
  /** QUIC idle timeout, which also ends a handshake left unfinished (default 10 s). */
  idleTimeoutMs: number;
}

/** The defaults of {@link PreAuthLimits}. */
export const PRE_AUTH_LIMITS: PreAuthLimits = {
  maxHandshakes: 256,
  maxUnauthenticated: 256,
  deadlineMs: 10_000,
  maxAttestPerConnection: 4,
  idleTimeoutMs: 10_000,
};

/** A running server. */
export interface InitServer {
  readonly port: number;
  close(): void;
}

const CLIENT_ID = /^[\x20-\x7e]{0,128}$/;
const PRE_AUTH_MAX_FRAME = 64 * 1024;

function errorReply(err: unknown) {
  if (err instanceof VaultError) {
    return {
      type: "error" as const,
      code: err.code,
      message: inVaultPaths(err.message),
      hint: inVaultPaths(err.hint),
    };
  }
  return {
    type: "error" as const,
    code: "internal",
    message: inVaultPaths(String((err as Error)?.message)),
  };
}

/** Connections that have not authenticated yet, bounded, each with a deadline. */
function createGate(limits: PreAuthLimits) {
  type Entry = { conn: VaultConnection; source: string; timer: ReturnType<typeof setTimeout> };
  // Map order is arrival order: the first entry of a source is its oldest.
  const held = new Map<VaultConnection, Entry>();
  const drop = (conn: VaultConnection) => {
    const e = held.get(conn);
    if (!e) return;
    clearTimeout(e.timer);
    held.delete(conn);
  };
  const evictOne = () => {
    const counts = new Map<string, number>();
    for (const e of held.values()) counts.set(e.source, (counts.get(e.source) ?? 0) + 1);
    let top = "";
    let most = 0;
    for (const [source, n] of counts) if (n > most) [top, most] = [source, n];
    for (const e of held.values()) {
      if (e.source !== top) continue;
      drop(e.conn);
      log("preauth.evicted", { peer: e.source, held: held.size });
      e.conn.close(2, "too many unauthenticated connections").catch(() => {});
      return;
    }
  };
  return {
    admit(conn: VaultConnection) {
      if (held.size >= limits.maxUnauthenticated) evictOne();
      const timer = setTimeout(() => {
        drop(conn);
        log("preauth.deadline", { peer: conn.remoteAddr.hostname });
        conn.close(3, "authentication deadline passed").catch(() => {});
      }, limits.deadlineMs);
      held.set(conn, { conn, source: conn.remoteAddr.hostname, timer });
      conn.closed.then(() => drop(conn));
    },
    /** Authenticated (or gone): no longer counted, no deadline. */
    release: drop,
    size: () => held.size,
  };
}

/** Starts serving. Returns once the UDP socket is bound. */
export function startInitServer(opts: InitServerOptions): InitServer {
  const limits = { ...PRE_AUTH_LIMITS, ...opts.preAuth };
  const listener = listenQuic({
    hostname: opts.hostname,
    port: opts.port,
    certChainPem: opts.identity.chainPem,
    keyPem: opts.identity.leafKeyPem,
    // fly-vault clients idle out at 10 s with keep-alives every 2 s, so this changes nothing
    // for them; a handshake a stranger never finishes is forgotten after 10 s, not 60.
    idleTimeoutMs: limits.idleTimeoutMs,
    maxHandshakes: limits.maxHandshakes,
    onRefused: () => log("preauth.handshake_refused", {}),
  });
  const throttle = opts.throttle ?? createAuthThrottle();
  const gate = createGate(limits);
  const collector = createCollector();
  (async () => {
    for await (const conn of listener.connections()) {
      gate.admit(conn);
      conn.closed.then(() => collector.closed());
      serveConnection(conn, opts, throttle, limits, () => gate.release(conn)).catch((err) =>
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
  limits: PreAuthLimits,
  release: () => void,
): Promise<void> {
  const peer = conn.remoteAddr.hostname;
  const ctx: ServerContext = { store: opts.store, machineId: opts.machineId, peer };
  let authenticated = false;
  let controlOpened = false;
  let attests = 0;
  // A verdict still waiting when the client goes is dropped, not sent into the void.
  const gone = new AbortController();
  conn.closed.then(() => gone.abort());
  const refuse = (writer: FrameWriter, reader: FrameReader, code: string, message: string) =>
    // Cancelling the read side tells the peer to stop sending: nothing unread piles up.
    writer.send({ type: "error", code, message }).then(() => writer.close(), () => {})
      .finally(() => reader.cancel().catch(() => {}));
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
    if (stream.tag === StreamTag.attest && ++attests > limits.maxAttestPerConnection) {
      // Each attestation fetches a token from Fly: a stranger may not make us fetch without end.
      refuse(
        writer,
        reader,
        "attest.too_many",
        "this connection has asked for enough attestations",
      );
    } else if (stream.tag === StreamTag.attest) {
      serveAttest(reader, writer, opts).catch(fail("attest.error"));
    } else if (stream.tag === StreamTag.control && controlOpened) {
      // One control stream, one authentication attempt, per connection.
      refuse(
        writer,
        reader,
        "protocol.second_control",
        "this connection already has a control stream",
      );
    } else if (stream.tag === StreamTag.control) {
      controlOpened = true;
      serveControl(reader, writer, opts, ctx, throttle, conn, gone.signal, () => {
        authenticated = true;
        release();
        const done = opts.activity?.connected();
        if (done) conn.closed.then(done, done);
      }).catch(fail("control.error"));
    } else if (!authenticated) {
      // Every other stream needs the token first; say so and drop the stream.
      refuse(writer, reader, "auth.required", "authenticate on the control stream first");
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
  await reader.cancel();
}

async function serveControl(
  reader: FrameReader,
  writer: FrameWriter,
  opts: InitServerOptions,
  ctx: ServerContext,
  throttle: AuthThrottle,
  conn: VaultConnection,
  gone: AbortSignal,
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
  const outcome = await throttle.attempt(ctx.peer, () => {
    const ok = tokensEqual(opts.accessToken, auth.token);
    // Logged when checked, not only when answered: a wrong verdict may be seconds away.
    log("auth.checked", { peer: ctx.peer, client: hello.client, ok });
    return ok;
  }, gone);
  if ("dropped" in outcome) {
    log("auth.dropped", { peer: ctx.peer, client: hello.client });
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
