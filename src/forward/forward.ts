/**
 * Both sides of TCP port forwards and of `pipe`. One stream per TCP
 * connection: `ForwardRequest{host, port}`, then `ForwardOk` or an error for
 * that connection only, then raw bytes both ways with half-close honoured.
 * A forward's client sends its bytes right behind the request, without
 * waiting for `ForwardOk` (one round trip less per connection); init buffers
 * them until its connect is done (its frame reader keeps what it read ahead).
 *
 * @module
 */
import { VaultError } from "../errors/mod.ts";
import {
  type ByteStream,
  ForwardReply,
  ForwardRequest,
  FrameReader,
  FrameWriter,
  StreamTag,
} from "../protocol/mod.ts";
import { type ForwardSpec, parseForwardSpec, parseHostPort } from "./spec.ts";
import { type PendingRemote, type RemoteStream, spliceTcp } from "./tcp.ts";

/**
 * Opens a stream of kind `tag` on the current connection (tag byte already
 * written). Its writable must be done with a chunk once that write resolves:
 * forwards reuse their read buffers (Deno's QUIC and socket writables copy).
 */
export type OpenStream = (tag: StreamTag) => Promise<ByteStream>;

const CONNECT_TIMEOUT_MS = 10_000;

function timeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms / 1000}s`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/**
 * Init side: reads the request, connects from the VM, answers, then splices
 * the stream and the TCP connection until both directions are closed.
 */
export async function serveForward(reader: FrameReader, writer: FrameWriter): Promise<void> {
  const req = await reader.message(ForwardRequest, "forward request");
  let conn: Deno.TcpConn;
  try {
    conn = await timeout(
      Deno.connect({ hostname: req.host, port: req.port }),
      CONNECT_TIMEOUT_MS,
      "connect",
    );
  } catch (err) {
    await writer.send({
      type: "error",
      code: "forward.refused",
      message: `${req.host}:${req.port} from the vault: ${(err as Error).message}`,
      hint: "is the service listening on that port inside the vault?",
    }).catch(() => {});
    await writer.close();
    await reader.cancel();
    return;
  }
  conn.setNoDelay(true);
  await writer.send({ type: "forward_ok" });
  const { head, readable } = reader.detach();
  await spliceTcp(conn, { head, readable, writer: writer.writer }).catch(() => {});
}

/**
 * Opens one forward stream to `host:port` from the vault and returns it
 * ready for raw bytes, or throws `forward.refused` (or the transport's error).
 * The readable is the transport's own stream, not a wrapper, so piping it to
 * a socket stays native.
 */
export async function openForward(
  openStream: OpenStream,
  host: string,
  port: number,
): Promise<RemoteStream & { writable: WritableStream<Uint8Array> }> {
  const stream = await openStream(StreamTag.forward);
  const writer = new FrameWriter(stream.writable);
  const reader = new FrameReader(stream.readable);
  await writer.send({ type: "forward", host, port });
  const reply = await reader.message(ForwardReply, "forward reply");
  if (reply.type === "error") {
    await writer.close();
    await reader.cancel();
    throw new VaultError(reply.code, reply.message, reply.hint ?? "");
  }
  const { head, readable } = reader.detach();
  return { head, readable, writer: writer.writer, writable: stream.writable };
}

/**
 * Opens one forward stream and sends its header without waiting for the
 * answer, so the caller can write the connection's first bytes at once: the
 * vault's side buffers them while it connects (any init does: its frame
 * reader keeps what it read past the header). Saves a round trip on every new
 * forwarded connection. `reply` rejects with `forward.refused` (the bytes
 * sent are then dropped) or the transport's error.
 */
export async function openForwardPipelined(
  openStream: OpenStream,
  host: string,
  port: number,
): Promise<PendingRemote> {
  const stream = await openStream(StreamTag.forward);
  const writer = new FrameWriter(stream.writable);
  const reader = new FrameReader(stream.readable);
  await writer.send({ type: "forward", host, port });
  const reply = (async () => {
    let answer;
    try {
      answer = await reader.message(ForwardReply, "forward reply");
    } catch (err) {
      await reader.cancel();
      throw err;
    }
    if (answer.type === "error") {
      await reader.cancel();
      throw new VaultError(answer.code, answer.message, answer.hint ?? "");
    }
    return reader.detach();
  })();
  // Seen as handled here; the caller awaits it.
  reply.catch(() => {});
  return { writer: writer.writer, reply };
}

/** A running local listener. */
export interface ForwardHandle {
  readonly spec: ForwardSpec;
  /** Where it listens (the real port when the spec said 0). */
  readonly addr: Deno.NetAddr;
  /** Connections currently open. */
  readonly active: number;
  /** Stops listening and resets open connections. */
  close(): Promise<void>;
}

/**
 * Listens on the spec's local address and forwards each accepted
 * connection over its own stream. A local port in use is a clear error now;
 * a refused remote is reported (via `onError`, default stderr) for that
 * connection only, and the listener keeps going.
 */
export function startForward(
  openStream: OpenStream,
  spec: ForwardSpec | string,
  opts: { onError?: (line: string) => void } = {},
): ForwardHandle {
  const s = typeof spec === "string" ? parseForwardSpec(spec) : spec;
  const onError = opts.onError ??
    ((line: string) => console.error(`fly-vault: ${line}`));
  let listener: Deno.TcpListener;
  try {
    listener = Deno.listen({ hostname: s.bind, port: s.localPort });
  } catch (err) {
    if (err instanceof Deno.errors.AddrInUse) {
      throw new VaultError(
        "forward.port_in_use",
        `local port ${s.bind}:${s.localPort} is already in use`,
        `pick another local port (e.g. ${
          s.localPort + 10000 > 65535 ? 0 : s.localPort + 10000
        }:${s.host}:${s.remotePort}), or stop what is listening there`,
      );
    }
    if (err instanceof Deno.errors.PermissionDenied) {
      throw new VaultError(
        "forward.bind_denied",
        `not allowed to listen on ${s.bind}:${s.localPort}`,
        "ports below 1024 need privileges; use a higher local port",
      );
    }
    throw new VaultError(
      "forward.listen",
      `cannot listen on ${s.bind}:${s.localPort}: ${(err as Error).message}`,
      "check the bind address",
    );
  }
  const conns = new Set<Deno.TcpConn>();
  const closing = new AbortController();
  const label = `${s.bind}:${(listener.addr as Deno.NetAddr).port} → ${s.host}:${s.remotePort}`;
  const handle = async (conn: Deno.TcpConn) => {
    conns.add(conn);
    conn.setNoDelay(true);
    try {
      let remote: PendingRemote;
      try {
        // A stream that broke before its header went out usually means the connection just
        // died; `openStream` reconnects, so try once more before failing this connection.
        remote = await openForwardPipelined(openStream, s.host, s.remotePort).catch(() =>
          openForwardPipelined(openStream, s.host, s.remotePort)
        );
      } catch (err) {
        onError(`forward ${label}: ${(err as Error).message}`);
        try {
          conn.close();
        } catch {
          // closed by close()
        }
        return;
      }
      // A refusal is reported before the socket is closed (a client sees the line first).
      const reply = remote.reply.catch((err) => {
        onError(`forward ${label}: ${(err as Error).message}`);
        throw err;
      });
      await spliceTcp(conn, { writer: remote.writer, reply }, closing.signal).catch(() => {});
    } finally {
      conns.delete(conn);
    }
  };
  const accepting = (async () => {
    try {
      for await (const conn of listener) handle(conn);
    } catch {
      // listener closed
    }
  })();
  return {
    spec: s,
    addr: listener.addr as Deno.NetAddr,
    get active() {
      return conns.size;
    },
    async close() {
      try {
        listener.close();
      } catch {
        // already closed
      }
      closing.abort(new Error("forward closed"));
      for (const c of conns) {
        try {
          c.close();
        } catch {
          // already closed
        }
      }
      await accepting;
    },
  };
}

/**
 * `fly-vault pipe HOST:PORT`: joins `stdin`/`stdout` to a TCP connection
 * made from the vault (for ssh's ProxyCommand). Resolves when both
 * directions are finished; throws `forward.refused` when the vault cannot
 * connect.
 */
export async function runPipe(
  openStream: OpenStream,
  target: string,
  stdin: ReadableStream<Uint8Array> = Deno.stdin.readable,
  stdout: WritableStream<Uint8Array> = Deno.stdout.writable,
): Promise<void> {
  const { host, port } = parseHostPort(target);
  const remote = await openForward(openStream, host, port);
  remote.writer.releaseLock();
  // ssh ends its ProxyCommand with SIGHUP. Reset the stream instead of dying silently, so
  // the vault drops its TCP connection now rather than after the QUIC idle timeout.
  const stop = new AbortController();
  let interrupted = false;
  const onSignal = () => {
    interrupted = true;
    stop.abort("interrupted");
  };
  const signals: Deno.Signal[] = ["SIGHUP", "SIGTERM", "SIGINT"];
  for (const sig of signals) Deno.addSignalListener(sig, onSignal);
  // pipeTo both ways: between Deno's own streams (stdin/stdout and QUIC) it copies natively.
  const fail = (err: unknown) => {
    stop.abort(err);
    throw err;
  };
  try {
    const results = await Promise.allSettled([
      stdin.pipeTo(remote.writable, { signal: stop.signal }).catch(fail),
      (async () => {
        if (remote.head.length) {
          const w = stdout.getWriter();
          for (const chunk of remote.head) await w.write(chunk);
          w.releaseLock();
        }
        await remote.readable.pipeTo(stdout, { signal: stop.signal });
      })().catch(fail),
    ]);
    const bad = results.find((r) => r.status === "rejected");
    if (bad && !interrupted) throw (bad as PromiseRejectedResult).reason;
  } finally {
    for (const sig of signals) Deno.removeSignalListener(sig, onSignal);
  }
}
