/**
 * The persistent client (ssh's ControlMaster/ControlPersist): the first
 * command to a vault with `persist` on leaves a background process, the
 * master, holding the pinned, authenticated QUIC connection. Later commands
 * reach the vault through it over a unix socket: one unix connection per
 * QUIC stream, the master opening the stream and piping bytes both ways, so
 * exec/console/forward/cp code runs unchanged above `openStream`.
 *
 * Safety: the socket lives in a directory that is ours and mode 0700 (the
 * first line of defence, checked by both sides); the socket file must be ours;
 * and on Linux the master checks every accepted peer's uid (SO_PEERCRED) and
 * drops the connection before reading a byte from it when any connected peer
 * is another user. The socket's name is a hash of the vault's whole
 * configuration (address, pins' file, token, …): a changed config never uses
 * an old master.
 *
 * A master that is missing, dead, stale or refuses us is never an error: the
 * command connects on its own (and starts a fresh master).
 *
 * Wire (unix socket): the client sends one message frame (the project's frame
 * codec) `{op, …}`; the master answers one message frame `{ok: true, …}` or
 * `{ok: false, code, message, hint}`; after an ok to `stream`, raw bytes flow.
 * `exec` (master_fast.ts) is a hello and an exec stream in one: its request
 * follows the op at once, and the master's answer comes before any byte down.
 *
 * Proof of life: a command the master takes without asking the vault first is
 * an exec carrying an id (init runs an id at most once); if the vault does not
 * answer a ping in time and nothing came down, the client sends the same
 * request on its own connection (relayedStream). Every other stream waits for
 * a fresh proof, as before.
 *
 * @module
 */
import { basename, join, resolve } from "node:path";
import { VaultError } from "../errors/mod.ts";
import {
  type AuthOk,
  type ByteStream,
  encodeMessage,
  FrameReader,
  FrameWriter,
  isStreamTag,
  StreamTag,
} from "../protocol/mod.ts";
import { lookupKnownVault, ownDenoArgv, type VaultConnection } from "../transport/mod.ts";
import {
  type ClientConfig,
  configPath,
  DEFAULT_PERSIST_MS,
  getVault,
  loadConfig,
  persistMsOf,
  type VaultConfig,
} from "./config.ts";
import type { VaultSession } from "./connect.ts";
import { mark } from "./timing.ts";
import type { ExecInvocation } from "./cli.ts";
import { fastKey, fileDigest, MASTER_WIRE } from "./master_fast.ts";

/** Where a vault's master lives. */
export interface MasterPaths {
  dir: string;
  socket: string;
  log: string;
  /** Present while a client is starting a master (so a second one doesn't). */
  starting: string;
}

const LIMIT_HEADER = 64 * 1024;
/** A master is local: a live one answers at once, even on a busy machine. */
const HELLO_TIMEOUT_MS = 3_000;
/**
 * Proof of life. A machine that restarted leaves our connection silently dead
 * until QUIC's idle timeout (init's new process ignores it), so the master asks
 * the vault (a status round trip on the control stream, answered from memory)
 * this often while commands come and go…
 */
const PING_INTERVAL_MS = 200;
/** …and this often once none came or went for {@link PING_QUIET_AFTER_MS} (the next asks first)… */
const PING_QUIET_INTERVAL_MS = 2_000;
const PING_QUIET_AFTER_MS = 10_000;
/**
 * …takes a command without asking when the last answer is at most one
 * interval and a round trip old (so a vault that died within the last ~¼ s is
 * the only one a command can still meet)…
 */
const FRESH_SLACK_MS = 50;
/** …else asks first, sending the client off on its own without an answer in 8 RTTs (≥ this)… */
const HELLO_PING_MIN_MS = 300;
/** …and gives up on the vault when a ping goes unanswered this long (a lossy path retransmits). */
const PING_TIMEOUT_MS = 3_000;
/**
 * Test knobs, read by a master only: a proof of life always stale (no background
 * pings), and dropping the vault's first word
 * on an exec taken without proof (as a path that failed just after forwarding).
 */
const TEST_STALE = Deno.env.get("FLY_VAULT_TEST_MASTER_STALE") === "1";
const TEST_PING_MS = TEST_STALE ? 3_600_000 : undefined;
const TEST_DROP_EAGER = Deno.env.get("FLY_VAULT_TEST_MASTER_DROP") === "1";
/** A "starting" marker older than this is from a master that never came up. */
const STARTING_STALE_MS = 30_000;

function runDirFor(config: ClientConfig): string {
  const xdg = Deno.env.get("XDG_RUNTIME_DIR");
  return resolve(xdg ? join(xdg, "fly-vault") : join(config.dir, "run"));
}

/**
 * Hex sha-256 of the vault's whole identity (and of this build), its current
 * pin included: a changed config, a re-pin, `forget` or an edited known_vaults
 * all make a new master. Reading the pins checks known_vaults' modes (a loose file throws,
 * and the command then connects on its own and reports it).
 */
async function identityHash(config: ClientConfig, name: string, vault: VaultConfig) {
  const token = Deno.env.get("FLY_VAULT_ACCESS_TOKEN") ?? vault.access_token ?? "";
  const pin = await lookupKnownVault(config.knownVaultsPath, name);
  const text = JSON.stringify([
    MASTER_WIRE,
    import.meta.url,
    Deno.uid(),
    resolve(config.path),
    resolve(config.knownVaultsPath),
    name,
    vault,
    token,
    pin ?? null,
  ]);
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Makes sure `dir` exists, is a real directory, ours, and closed to others
 * (tightening it if it is ours). False when it cannot be made safe.
 */
export function ensurePrivateDir(dir: string): boolean {
  try {
    Deno.mkdirSync(dir, { recursive: true, mode: 0o700 });
    const st = Deno.lstatSync(dir);
    if (!st.isDirectory || st.isSymlink) return false;
    if (st.uid !== Deno.uid()) return false;
    if (((st.mode ?? 0) & 0o077) !== 0) Deno.chmodSync(dir, 0o700);
    return true;
  } catch {
    return false;
  }
}

/** The master's paths for `name`, or null when no private run directory can be had. */
export async function masterPaths(
  config: ClientConfig,
  name: string,
  vault: VaultConfig,
): Promise<MasterPaths | null> {
  const hash = (await identityHash(config, name, vault)).slice(0, 24);
  let dir = runDirFor(config);
  // sun_path holds 108 bytes: a deep config directory falls back to a short private one.
  if (join(dir, `${hash}.sock.0000000`).length > 100) dir = `/tmp/fly-vault-${Deno.uid()}`;
  if (!ensurePrivateDir(dir)) return null;
  const base = join(dir, hash);
  return {
    dir,
    socket: `${base}.sock`,
    log: `${base}.log`,
    starting: `${base}.starting`,
  };
}

// ---------------------------------------------------------------- unix plumbing

/** Reads exactly `n` bytes, or null at end of stream before the first byte. */
async function readExactly(conn: Deno.Conn, n: number): Promise<Uint8Array | null> {
  const out = new Uint8Array(n);
  let off = 0;
  while (off < n) {
    const got = await conn.read(out.subarray(off));
    if (got === null) {
      if (off === 0) return null;
      throw new VaultError("master.truncated", "the master connection ended mid-message", "");
    }
    off += got;
  }
  return out;
}

/** One message frame read byte-exactly, so what follows stays on the connection. */
async function readMessage(conn: Deno.Conn): Promise<Record<string, unknown> | null> {
  const head = await readExactly(conn, 5);
  if (!head) return null;
  const length = new DataView(head.buffer).getUint32(0);
  if (head[4] !== 0 || length < 1 || length > LIMIT_HEADER) {
    throw new VaultError("master.bad_message", "the master connection sent a bad header", "");
  }
  const body = await readExactly(conn, length - 1);
  const value = JSON.parse(new TextDecoder().decode(body ?? new Uint8Array(0)));
  if (typeof value !== "object" || value === null) {
    throw new VaultError("master.bad_message", "the master connection sent a bad header", "");
  }
  return value as Record<string, unknown>;
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let off = 0;
  while (off < bytes.length) off += await conn.write(bytes.subarray(off));
}

/**
 * A unix connection as a byte stream with real half-close (Deno's own
 * `conn.readable`/`writable` close the whole socket at either end, which
 * would cut a forward whose local side stopped sending).
 *
 * Relayed streams frame the client's direction (`framed`: the client
 * "writes", the master "reads"): each chunk goes as a 4-byte length and the
 * bytes, and a zero length marks a clean end. A client process that dies
 * leaves end-of-file without that mark, and the master resets the vault's
 * stream, as a dropped connection would (init hangs up on an exec's command);
 * a clean end is a FIN (a forward's half-close goes on working).
 */
function connStream(
  conn: Deno.Conn,
  opts: { onClosed?: () => void; framed?: "write" | "read" } = {},
): ByteStream & { close(): void; atFrameBoundary(): boolean } {
  let readDone = false;
  let writeDone = false;
  let closed = false;
  const close = () => {
    if (closed) return;
    closed = true;
    try {
      conn.close();
    } catch { /* already */ }
    opts.onClosed?.();
  };
  const finish = () => {
    if (readDone && writeDone) close();
  };
  let pending = new Uint8Array(0);
  let remaining = 0;
  let ended = opts.framed !== "read";
  const readable = new ReadableStream<Uint8Array>({
    async pull(c) {
      while (true) {
        if (opts.framed === "read") {
          if (remaining > 0 && pending.length > 0) {
            const n = Math.min(remaining, pending.length);
            c.enqueue(pending.subarray(0, n));
            pending = pending.subarray(n);
            remaining -= n;
            return;
          }
          if (remaining === 0 && pending.length >= 4) {
            remaining = new DataView(pending.buffer, pending.byteOffset, 4).getUint32(0);
            pending = pending.subarray(4);
            if (remaining === 0) ended = true;
            continue;
          }
        }
        const buf = new Uint8Array(64 * 1024);
        let n: number | null;
        try {
          n = ended && opts.framed === "read" ? null : await conn.read(buf);
        } catch (err) {
          readDone = true;
          if (closed) return c.close();
          c.error(err);
          close();
          return;
        }
        if (n === null) {
          readDone = true;
          if (ended) {
            c.close();
            finish();
          } else {
            c.error(new Error("the client went away mid-stream"));
            close();
          }
          return;
        }
        if (opts.framed !== "read") return c.enqueue(buf.subarray(0, n));
        if (pending.length === 0) pending = buf.subarray(0, n);
        else {
          const joined = new Uint8Array(pending.length + n);
          joined.set(pending);
          joined.set(buf.subarray(0, n), pending.length);
          pending = joined;
        }
      }
    },
    cancel() {
      readDone = true;
      finish();
    },
  }, { highWaterMark: 0 });
  const lengthOf = (n: number) => {
    const head = new Uint8Array(4);
    new DataView(head.buffer).setUint32(0, n);
    return head;
  };
  const writable = new WritableStream<Uint8Array>({
    async write(chunk) {
      if (opts.framed !== "write") return await writeAll(conn, chunk);
      if (chunk.length === 0) return;
      await writeAll(conn, lengthOf(chunk.length));
      await writeAll(conn, chunk);
    },
    async close() {
      writeDone = true;
      try {
        if (opts.framed === "write") await writeAll(conn, lengthOf(0));
        await conn.closeWrite();
      } catch { /* gone */ }
      finish();
    },
    abort() {
      writeDone = true;
      close();
    },
  });
  return {
    readable,
    writable,
    close,
    atFrameBoundary: () => remaining === 0 && pending.length === 0,
  };
}

/** Connects, sends `request`, reads the answer; throws on anything but ok. */
async function ask(
  socket: string,
  request: Record<string, unknown>,
  timeoutMs = HELLO_TIMEOUT_MS,
): Promise<{ conn: Deno.UnixConn; reply: Record<string, unknown> }> {
  const conn = await Deno.connect({ transport: "unix", path: socket });
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const reply = await Promise.race([
      (async () => {
        await writeAll(conn, encodeMessage(request));
        return await readMessage(conn);
      })(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new VaultError("master.timeout", "the master did not answer", "")),
          timeoutMs,
        );
      }),
    ]);
    if (!reply) throw new VaultError("master.gone", "the master closed the connection", "");
    if (reply.ok !== true) {
      throw new VaultError(
        String(reply.code ?? "master.refused"),
        String(reply.message ?? "the master refused"),
        String(reply.hint ?? ""),
      );
    }
    return { conn, reply };
  } catch (err) {
    try {
      conn.close();
    } catch { /* already */ }
    throw err;
  } finally {
    clearTimeout(timer);
  }
}

/** The socket file is ours and a socket (a stranger's file in our directory is not trusted). */
function socketIsOurs(socket: string): boolean {
  try {
    const st = Deno.lstatSync(socket);
    return st.isSocket === true && st.uid === Deno.uid();
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------- client side

/** Options for {@link useMaster}. */
export interface UseMasterOptions {
  config: ClientConfig;
  name: string;
  vault: VaultConfig;
  /** Connects on our own (the fallback, and the first command's own connection). */
  direct: () => Promise<VaultSession>;
  /** A progress line (shown with -v). */
  say: (line: string) => void;
  /** Ask the master to refresh the vault's state (connect decides whether to provision). */
  freshState?: boolean;
  /** Open the control relay now (status, sessions): a failure then still falls back. */
  control?: boolean;
  /** How to start a master: the global flags to pass on. */
  masterArgs: string[];
}

/**
 * A session through the vault's master when one is alive; otherwise a direct
 * session, after which a master is started in the background.
 */
export async function useMaster(opts: UseMasterOptions): Promise<VaultSession> {
  mark("client.master_module");
  const paths = await masterPaths(opts.config, opts.name, opts.vault).catch(() => null);
  mark("client.master_paths");
  if (!paths) {
    opts.say("no private run directory for a master; connecting directly");
    return await opts.direct();
  }
  const viaMaster = await masterSession(paths, opts).catch(() => null);
  if (viaMaster) return viaMaster;
  const session = await opts.direct();
  // Named after the pin this connect may just have written, as the master will name it. A
  // master still listening there (its vault slow to answer just now) is left to recover or end.
  const after = await masterPaths(opts.config, opts.name, opts.vault).catch(() => null);
  if (after && !socketIsOurs(after.socket)) startMaster(after, opts);
  return session;
}

async function masterSession(
  paths: MasterPaths,
  opts: UseMasterOptions,
): Promise<VaultSession | null> {
  if (!socketIsOurs(paths.socket)) return null;
  let hello: Awaited<ReturnType<typeof ask>>;
  try {
    // Eager: the master need not prove the vault alive now; a stream asks for it (see serveMaster).
    const eager = !opts.freshState && !opts.control;
    hello = await ask(paths.socket, { op: "hello", fresh: !!opts.freshState, eager });
    mark("client.hello_answered");
  } catch (err) {
    // A socket nobody listens on is a dead master's: clear it so the next master can bind.
    if (err instanceof Deno.errors.ConnectionRefused) {
      await Deno.remove(paths.socket).catch(() => {});
    }
    opts.say(`master for ${opts.name} not usable (${(err as Error).message}); connecting directly`);
    return null;
  }
  let control: { reader: FrameReader; writer: FrameWriter } | undefined;
  if (opts.control) {
    try {
      const { conn } = await ask(paths.socket, { op: "control" });
      const s = connStream(conn);
      control = { reader: new FrameReader(s.readable), writer: new FrameWriter(s.writable) };
    } catch {
      hello.conn.close();
      return null;
    }
  }
  opts.say(
    `using the master for ${opts.name} (pid ${hello.reply.pid}): pinned identity verified ` +
      `when it connected, answering now`,
  );
  const open = new Set<{ close(): void }>();
  const helloStream = connStream(hello.conn);
  // The hello connection stays open: it ends when the master goes, which is how we learn it.
  const closed = (async () => {
    const r = helloStream.readable.getReader();
    while (!(await r.read().catch(() => ({ done: true }))).done) { /* nothing is sent */ }
    return { code: 0, reason: "master gone" };
  })();
  let direct: Promise<VaultSession> | undefined;
  const ownStream = (tag: StreamTag) => (direct ??= opts.direct()).then((d) => d.openStream(tag));
  const openStream = async (tag: StreamTag): Promise<ByteStream> => {
    if (direct) return (await direct).openStream(tag);
    return await Promise.resolve(relayedStream({
      socket: paths.socket,
      tag,
      open,
      // The master takes an exec carrying an id without a proof of life first (see serveMaster).
      execIds: hello.reply.exec_ids === true && tag === StreamTag.exec,
      ownStream: () => ownStream(tag),
      say: (why) => opts.say(`master for ${opts.name} ${why}; connecting directly`),
    }));
  };
  const conn: VaultConnection = {
    remoteAddr: { hostname: paths.socket, port: 0 },
    openStream,
    async *incoming() {},
    // Loss detection (reconnect.ts) pings through the master: its echo is the vault's.
    ping: () =>
      ask(paths.socket, { op: "ping" }, PING_TIMEOUT_MS * 2).then(
        (r) => r.conn.close(),
        () => new Promise<void>(() => {}),
      ),
    async close() {
      for (const s of open) s.close();
      helloStream.close();
      if (direct) await (await direct.catch(() => null))?.close();
    },
    closed,
  };
  return {
    name: opts.name,
    conn,
    welcome: hello.reply.welcome as AuthOk,
    attested: false,
    viaMaster: true,
    get control() {
      if (!control) {
        throw new VaultError("master.no_control", "this session has no control stream", "");
      }
      return control;
    },
    openStream,
    close: async () => {
      await control?.writer.close();
      await conn.close();
    },
  };
}

/**
 * Set for a client restarted (clean trust store) after its master's stream
 * failed: the id the first try carried, so init still runs the command once.
 */
export const EXEC_ID_VAR = "FLY_VAULT_EXEC_ID";

/** A random exec id (see ExecRequest.id). */
function newExecId(): string {
  return Array.from(
    crypto.getRandomValues(new Uint8Array(16)),
    (b) => b.toString(16).padStart(2, "0"),
  )
    .join("");
}

/** The most an exec may send before the vault's first word and still be sent again. */
const REPLAY_LIMIT = 1 << 20;

/**
 * A stream through the master, opened on its first use. An exec whose
 * request took an id (`execId()`, called by runExec before it writes) goes
 * at once, the master forwarding it without a proof of life; until the
 * vault's first byte comes back, what was written is kept, and a master's
 * stream that ends or fails before then is replaced by one on our own
 * connection with the same bytes: init runs an id at most once. Any other
 * stream waits for the master's ok (after its proof of life), and only a
 * refusal goes direct (nothing reached the vault).
 */
function relayedStream(o: {
  socket: string;
  tag: StreamTag;
  open: Set<{ close(): void }>;
  execIds: boolean;
  ownStream: () => Promise<ByteStream>;
  say: (why: string) => void;
  /** Opened already (the fast path): the master said ok to an exec whose request, with `id`, went. */
  pre?: { conn: Deno.UnixConn; request: Uint8Array; id: string };
}): ByteStream & { execId(): string | undefined } {
  let id: string | undefined = o.pre?.id;
  let heard = false;
  let kept: Uint8Array[] | null = o.pre ? [o.pre.request] : [];
  let keptBytes = 0;
  let endWritten = false;
  type Side = {
    reader: ReadableStreamDefaultReader<Uint8Array>;
    writer: WritableStreamDefaultWriter<Uint8Array>;
    /** Resolves when the master said ok; rejects on its refusal (read before the first byte). */
    answered: Promise<void>;
    direct: boolean;
    ended?: boolean;
  };
  let side: Promise<Side> | undefined;
  let switched = false;
  /** The write under way: a switch replays after it, so no chunk is lost or sent twice. */
  let writing: Promise<unknown> = Promise.resolve();
  const sideOf = (
    s: { readable: ReadableStream<Uint8Array>; writable: WritableStream<Uint8Array> },
  ) => ({
    reader: s.readable.getReader(),
    writer: s.writable.getWriter(),
  });
  const own = async (): Promise<Side> => {
    const d = sideOf(await o.ownStream());
    const next: Side = { ...d, answered: Promise.resolve(), direct: true };
    for (const chunk of kept ?? []) await d.writer.write(chunk);
    if (endWritten) {
      next.ended = true;
      await d.writer.close();
    }
    return next;
  };
  const viaMaster = async (): Promise<Side> => {
    if (id === undefined) {
      // Not an exec with an id: the master's ok (after its proof) first, as ever.
      try {
        const { conn } = await ask(o.socket, { op: "stream", tag: o.tag });
        const s = connStream(conn, { onClosed: () => o.open.delete(s), framed: "write" });
        o.open.add(s);
        return { ...sideOf(s), answered: Promise.resolve(), direct: false };
      } catch (err) {
        o.say(`failed (${(err as Error).message})`);
        return await own();
      }
    }
    mark("client.eager_stream");
    const conn = await Deno.connect({ transport: "unix", path: o.socket });
    await writeAll(conn, encodeMessage({ op: "stream", tag: o.tag, eager: true }));
    const s = connStream(conn, { onClosed: () => o.open.delete(s), framed: "write" });
    o.open.add(s);
    const answered = readMessage(conn).then((reply) => {
      if (!reply) throw new VaultError("master.gone", "the master closed the connection", "");
      if (reply.ok !== true) {
        throw new VaultError(String(reply.code ?? "master.refused"), String(reply.message), "");
      }
    });
    answered.catch(() => {});
    return { ...sideOf(s), answered, direct: false };
  };
  if (o.pre) {
    const s = connStream(o.pre.conn, { onClosed: () => o.open.delete(s), framed: "write" });
    o.open.add(s);
    side = Promise.resolve({ ...sideOf(s), answered: Promise.resolve(), direct: false });
  }
  const current = () => side ??= viaMaster().catch(() => own());
  /** The master's stream failed before the vault's first word: the same bytes, on our own. */
  const switchOver = (why: string) => {
    if (switched) return;
    switched = true;
    const old = side;
    side = (async () => {
      if (kept === null) {
        throw new VaultError(
          "exec.lost",
          "the master's connection to the vault stopped answering before the command started",
          "run the command again",
        );
      }
      o.say(`did not answer (${why}); sending the command again (same exec id)`);
      await writing;
      const was = await old?.catch(() => null);
      was?.reader.cancel().catch(() => {});
      was?.writer.abort().catch(() => {});
      return await own();
    })();
  };
  const retryable = () => id !== undefined && !heard && !switched;
  const readable = new ReadableStream<Uint8Array>({
    async pull(c) {
      while (true) {
        const s = await current();
        let got: ReadableStreamReadResult<Uint8Array>;
        try {
          await s.answered;
          got = await s.reader.read();
          if (got.done && retryable() && !s.direct) throw new Error("the stream ended");
        } catch (err) {
          if (!retryable() || s.direct) return c.error(err);
          switchOver((err as Error).message);
          continue;
        }
        if (got.done) return c.close();
        heard = true;
        kept = null;
        return c.enqueue(got.value);
      }
    },
    async cancel(reason) {
      await (await current()).reader.cancel(reason);
    },
  }, { highWaterMark: 0 });
  const writable = new WritableStream<Uint8Array>({
    async write(chunk) {
      while (true) {
        const p = current();
        const s = await p;
        if (p !== side) continue; // switched meanwhile: the new side (after its replay)
        if (!s.direct && id !== undefined && !heard && kept !== null) {
          keptBytes += chunk.length;
          if (keptBytes > REPLAY_LIMIT) kept = null;
          else kept.push(chunk);
        }
        const w = s.writer.write(chunk);
        writing = w.catch(() => {});
        try {
          return await w;
        } catch (err) {
          // The kept copy goes on our own connection once the read side finds the master gone.
          if (s.direct || id === undefined || kept === null) throw err;
          return;
        }
      }
    },
    async close() {
      endWritten = true;
      while (true) {
        const p = current();
        const s = await p;
        if (p !== side) continue;
        if (s.ended) return;
        s.ended = true;
        const w = s.writer.close();
        writing = w.catch(() => {});
        return await w.catch((err) => {
          if (s.direct || id === undefined) throw err;
        });
      }
    },
    async abort(reason) {
      await (await current()).writer.abort(reason);
    },
  });
  return {
    readable,
    writable,
    execId() {
      if (o.execIds && side === undefined) {
        const again = Deno.env.get(EXEC_ID_VAR);
        id ??= /^[0-9a-f]{32}$/.test(again ?? "") ? again : newExecId();
      }
      return id;
    },
  };
}

/**
 * The rest of master_fast.ts's exec, once the master took it: the relayed
 * stream (sent again on our own connection if it fails before the vault's
 * first word), then the command as execCommand runs it. Resolves to the exit
 * status, errors reported as the usual path reports them.
 */
export async function runFastExec(
  conn: Deno.UnixConn,
  request: Uint8Array,
  id: string,
  inv: ExecInvocation,
  exec: typeof import("./exec.ts"),
  polluted = false,
): Promise<number> {
  const flags = inv.globals;
  let direct: Promise<VaultSession> | undefined;
  const open = new Set<{ close(): void }>();
  const stream = relayedStream({
    socket: "",
    tag: StreamTag.exec,
    open,
    execIds: true,
    pre: { conn, request, id },
    ownStream: async () => {
      if (polluted) {
        // Dialing needs a clean trust store: the program again, clean (it exits with the child's
        // status), with this command's id. Nothing was read from stdin yet (that starts once
        // the vault answers), so the child gets all of it.
        const { ensureCleanTrustStore } = await import("./trust.ts");
        for (const s of open) s.close();
        Deno.env.set(EXEC_ID_VAR, id);
        await ensureCleanTrustStore();
      }
      const { openSession } = await import("./commands.ts");
      direct ??= openSession(inv.vault, { ...flags, persist: false });
      return (await direct).openStream(StreamTag.exec);
    },
    say: (why) => {
      if (flags.verbose) {
        console.error(`fly-vault: master for ${inv.vault} ${why}; connecting directly`);
      }
    },
  });
  try {
    return await exec.runExec(
      stream,
      {
        argv: inv.shell ? [inv.argv.join(" ")] : inv.argv,
        ...(inv.shell ? { shell: true as const } : {}),
        env: {},
        cwd: inv.cwd,
        tty: false,
      },
      {
        stdin: inv.noStdin ? undefined : Deno.stdin.readable,
        stdout: Deno.stdout.writable,
        stderr: Deno.stderr.writable,
      },
      exec.forwardedSignals(),
      { requestSent: true },
    );
  } catch (err) {
    const { formatError } = await import("../errors/mod.ts");
    // As runExecInvocation: a command that could not start in the vault is 1, not 255.
    if ((err as { code?: string }).code === "exec.no_cwd") {
      console.error(formatError(err));
      return 1;
    }
    const { reportError } = await import("./commands.ts");
    return reportError(err);
  } finally {
    for (const s of open) s.close();
    if (direct) await (await direct.catch(() => null))?.close();
  }
}

/** Spawns `fly-vault master NAME --serve` detached, unless another client just did. */
function startMaster(paths: MasterPaths, opts: UseMasterOptions): void {
  try {
    const st = Deno.statSync(paths.starting);
    if (Date.now() - (st.mtime?.getTime() ?? 0) < STARTING_STALE_MS) return;
    Deno.removeSync(paths.starting);
  } catch { /* none */ }
  try {
    Deno.writeTextFileSync(paths.starting, `${Deno.pid}\n`, { createNew: true, mode: 0o600 });
  } catch {
    return; // another client won the race
  }
  const argv = ownDenoArgv();
  if (!argv) {
    Deno.removeSync(paths.starting);
    return;
  }
  try {
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        ...argv.denoFlags,
        argv.script,
        ...opts.masterArgs,
        "master",
        opts.name,
        "--serve",
      ],
      stdin: "null",
      stdout: "null",
      stderr: "null",
      detached: true,
    }).spawn();
    child.unref();
    opts.say(`started a master for ${opts.name} (pid ${child.pid})`);
  } catch {
    Deno.removeSync(paths.starting);
  }
}

/** Ends the vault's master if one runs (`forget`: its connection rests on the pin being dropped). */
export async function stopMasterOf(
  config: ClientConfig,
  name: string,
  vault: VaultConfig,
): Promise<boolean> {
  const paths = await masterPaths(config, name, vault).catch(() => null);
  if (!paths || !socketIsOurs(paths.socket)) return false;
  try {
    const r = await ask(paths.socket, { op: "stop" });
    await r.conn.read(new Uint8Array(1)).catch(() => null);
    r.conn.close();
    return true;
  } catch {
    return false;
  }
}

/** `fly-vault master NAME --status|--stop`: what ssh -O check / -O exit do. */
export async function controlMaster(
  flags: { config?: string; json?: boolean },
  name: string,
  op: "status" | "stop",
): Promise<number> {
  const config = await loadConfig(flags.config);
  const vault = getVault(config, name);
  const paths = await masterPaths(config, name, vault);
  let reply: Record<string, unknown> | undefined;
  if (paths && socketIsOurs(paths.socket)) {
    try {
      const r = await ask(paths.socket, { op });
      reply = r.reply;
      if (op === "stop") await r.conn.read(new Uint8Array(1)).catch(() => null);
      r.conn.close();
    } catch { /* not running */ }
  }
  if (!reply) {
    if (flags.json) console.log(JSON.stringify({ vault: name, running: false }));
    else console.error(`fly-vault: no master running for ${name}`);
    return 1;
  }
  const { ok: _, ...info } = reply;
  if (flags.json) console.log(JSON.stringify({ vault: name, running: op === "status", ...info }));
  else if (op === "stop") console.error(`fly-vault: master for ${name} (pid ${info.pid}) stopped`);
  else {
    console.log(
      `master for ${name} running (pid ${info.pid}), ${info.clients} client(s), ` +
        `${info.streams} stream(s) so far, exits after ${
          Math.round(Number(info.persist_ms) / 1000)
        } s idle; log ${info.log}`,
    );
  }
  return 0;
}

// ---------------------------------------------------------------- master side

/** Tells uids of connected unix peers apart (Linux: SO_PEERCRED through libc). */
interface PeerCheck {
  /** Shuts down every accepted socket whose peer is another uid; true if there was one. */
  strangers(): number[];
}

function linuxPeerCheck(
  log: (event: string, f?: Record<string, unknown>) => void,
): PeerCheck | null {
  if (Deno.build.os !== "linux") return null;
  let lib: Deno.DynamicLibrary<{
    getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"]; result: "i32" };
    shutdown: { parameters: ["i32", "i32"]; result: "i32" };
  }>;
  try {
    lib = Deno.dlopen("libc.so.6", {
      getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
      shutdown: { parameters: ["i32", "i32"], result: "i32" },
    });
  } catch (err) {
    log("master.no_peer_check", { error: String((err as Error).message) });
    return null;
  }
  const SOL_SOCKET = 1, SO_PEERCRED = 17, SO_DOMAIN = 39, AF_UNIX = 1, SHUT_RDWR = 2;
  const uid = Deno.uid();
  let known = new Set<string>();
  return {
    strangers() {
      const found: number[] = [];
      const checked = new Set<string>();
      for (const e of Deno.readDirSync("/proc/self/fd")) {
        const fd = Number(e.name);
        let target: string;
        try {
          target = Deno.readLinkSync(`/proc/self/fd/${fd}`);
        } catch {
          continue;
        }
        if (!target.startsWith("socket:")) continue;
        // An fd holding the same socket inode as at the last scan was judged then.
        const key = `${fd}:${target}`;
        if (known.has(key)) {
          checked.add(key);
          continue;
        }
        const int = new Uint8Array(4);
        const len = new Uint32Array([4]);
        const lenBuf = new Uint8Array(len.buffer);
        if (lib.symbols.getsockopt(fd, SOL_SOCKET, SO_DOMAIN, int, lenBuf) !== 0) continue;
        if (new DataView(int.buffer).getInt32(0, true) !== AF_UNIX) continue;
        // A peer that already exited still has its uid here (its pid reads 0): judge by uid only.
        const cred = new Uint8Array(12);
        len[0] = 12;
        if (lib.symbols.getsockopt(fd, SOL_SOCKET, SO_PEERCRED, cred, lenBuf) !== 0) continue;
        const peerUid = new DataView(cred.buffer).getUint32(4, true);
        if (peerUid !== uid) {
          lib.symbols.shutdown(fd, SHUT_RDWR);
          found.push(peerUid);
        } else checked.add(key);
      }
      known = checked;
      return found;
    },
  };
}

/** Opens (appending, 0600; restarted when over 1 MiB) a master's log and writes `early` to it. */
function openLog(path: string, early: string[]): Deno.FsFile | undefined {
  try {
    const big = (Deno.statSync(path).size ?? 0) > 1 << 20;
    if (big) Deno.removeSync(path);
  } catch { /* none yet */ }
  try {
    const file = Deno.openSync(path, { append: true, create: true, mode: 0o600 });
    file.writeSync(new TextEncoder().encode(early.join("")));
    return file;
  } catch {
    return undefined;
  }
}

/**
 * Runs the master for `name` (the hidden `fly-vault master NAME --serve`):
 * connect, listen, relay, and exit after `persist` without clients, when the
 * vault connection dies, on `--stop`, or on SIGTERM/SIGINT/SIGHUP.
 */
export async function serveMaster(
  name: string,
  flags: { config?: string; connectTimeout?: number },
  connect: (
    config: ClientConfig,
    vault: VaultConfig,
    onEvent: (e: { type: string }) => void,
  ) => Promise<VaultSession>,
): Promise<number> {
  // The bytes this master is made from, for its fast name (master_fast.ts).
  const configDigest = await fileDigest(configPath(flags.config));
  const config = await loadConfig(flags.config);
  const vault = getVault(config, name);
  const persistMs = persistMsOf(config, name, vault) || DEFAULT_PERSIST_MS;
  const before = await masterPaths(config, name, vault).catch(() => null);
  if (!before) return 255;
  // Lines are kept until the log's name is known: it follows the pin, which connecting may change.
  const early: string[] = [];
  const sink: { file?: Deno.FsFile } = {};
  let lines = 0;
  const log = (event: string, fields: Record<string, unknown> = {}) => {
    const line = JSON.stringify({ ts: new Date().toISOString(), event, ...fields }) + "\n";
    if (!sink.file) return void (early.length < 1000 && early.push(line));
    try {
      // A master used for days stays a few MiB of log at most.
      if (++lines % 1000 === 0 && sink.file.statSync().size > 4 << 20) sink.file.truncateSync(0);
      sink.file.writeSync(new TextEncoder().encode(line));
    } catch { /* disk full: carry on */ }
  };
  const dropStarting = () => Deno.remove(before.starting).catch(() => {});
  log("master.starting", { vault: name, pid: Deno.pid, persist_ms: persistMs });
  let session: VaultSession;
  let paths: MasterPaths | null;
  try {
    session = await connect(config, vault, (e) => log(`dial.${e.type}`, { ...e, type: undefined }));
    paths = await masterPaths(config, name, vault);
  } catch (err) {
    log("master.connect_failed", { error: String((err as Error).message) });
    openLog(before.log, early);
    await dropStarting();
    return 255;
  }
  if (!paths) {
    await session.close();
    await dropStarting();
    return 255;
  }
  sink.file = openLog(paths.log, early);
  // Someone else's master already serves this socket (a race between two first commands).
  if (socketIsOurs(paths.socket)) {
    try {
      const r = await ask(paths.socket, { op: "status" });
      r.conn.close();
      log("master.already_running", { pid: r.reply.pid });
      await session.close();
      await dropStarting();
      return 0;
    } catch {
      await Deno.remove(paths.socket).catch(() => {});
    }
  }
  const tmp = `${paths.socket}.${Deno.pid}`;
  await Deno.remove(tmp).catch(() => {});
  const listener = Deno.listen({ transport: "unix", path: tmp });
  Deno.chmodSync(tmp, 0o600);
  Deno.renameSync(tmp, paths.socket);
  const ino = Deno.lstatSync(paths.socket).ino;
  await dropStarting();
  // The fast name: a link to our socket named by the raw bytes we were made from (and the pin
  // as now written), made only when config.toml is still what we loaded.
  let fastAlias: string | undefined;
  try {
    const fast = await fastKey({ configPath: resolve(config.path), vault: name });
    if (
      fast && fast.dir === paths.dir && configDigest !== null &&
      await fileDigest(configPath(flags.config)) === configDigest
    ) {
      const alias = join(paths.dir, `${fast.key}.fast`);
      const tmpAlias = `${alias}.${Deno.pid}`;
      await Deno.remove(tmpAlias).catch(() => {});
      Deno.symlinkSync(basename(paths.socket), tmpAlias);
      Deno.renameSync(tmpAlias, alias);
      fastAlias = alias;
    }
  } catch (err) {
    log("master.no_fast_name", { error: String((err as Error).message) });
  }
  const peers = linuxPeerCheck(log);
  log("master.listening", { socket: paths.socket, peer_check: !!peers });

  const started = Date.now();
  let clients = 0;
  let streams = 0;
  let lastIdle = Date.now();
  let idleTimer: ReturnType<typeof setTimeout> | undefined;
  const hellos = new Set<Deno.Conn>();
  let stopping = false;
  let controlBusy: Promise<void> = Promise.resolve();

  const shutdown = async (why: string) => {
    if (stopping) return;
    stopping = true;
    clearTimeout(idleTimer);
    try {
      if (Deno.lstatSync(paths.socket).ino === ino) Deno.removeSync(paths.socket);
    } catch { /* gone */ }
    try {
      if (fastAlias && Deno.readLinkSync(fastAlias) === basename(paths.socket)) {
        Deno.removeSync(fastAlias);
      }
    } catch { /* gone */ }
    try {
      listener.close();
    } catch { /* already */ }
    // Logged once the socket is gone: whoever reads this line finds no stale socket.
    log("master.exit", { why, streams });
    for (const c of hellos) {
      try {
        c.close();
      } catch { /* already */ }
    }
    await session.close().catch(() => {});
    sink.file?.close();
    Deno.exit(0);
  };
  const armIdle = () => {
    clearTimeout(idleTimer);
    lastIdle = Date.now();
    idleTimer = setTimeout(() => clients === 0 && shutdown("idle"), persistMs);
  };
  let lastActivity = Date.now();
  const busy = () => {
    clients++;
    lastActivity = Date.now();
    clearTimeout(idleTimer);
  };
  const done = () => {
    lastActivity = Date.now();
    if (--clients === 0 && !stopping) armIdle();
  };
  armIdle();
  // Proof of life (see PING_INTERVAL_MS): a command rarely waits for it.
  let lastAlive = Date.now();
  let srtt = 0;
  let pinging: Promise<Record<string, unknown> | null> | null = null;
  const ping = () =>
    pinging ??= (async () => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const sent = performance.now();
      try {
        const status = await Promise.race([
          withControl(async () => {
            await session.control.writer.send({ type: "status" });
            const frame = await session.control.reader.next();
            return frame?.kind === "message" ? frame.message as Record<string, unknown> : null;
          }),
          new Promise<null>((r) => timer = setTimeout(() => r(null), PING_TIMEOUT_MS)),
        ]);
        if (status) {
          lastAlive = Date.now();
          const rtt = performance.now() - sent;
          srtt = srtt === 0 ? rtt : 0.875 * srtt + 0.125 * rtt;
        }
        return status;
      } catch {
        return null;
      } finally {
        clearTimeout(timer);
        pinging = null;
      }
    })();
  /** A ping answered in time for a waiting command, or null (the command goes on its own). */
  const quickPing = async () => {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const limit = Math.min(PING_TIMEOUT_MS, Math.max(HELLO_PING_MIN_MS, 8 * srtt));
    try {
      return await Promise.race([
        ping(),
        new Promise<null>((r) => timer = setTimeout(() => r(null), limit)),
      ]);
    } finally {
      clearTimeout(timer);
    }
  };
  /** No proof of life within one interval and a round trip or two. */
  const stale = () =>
    TEST_STALE || Date.now() - lastAlive > PING_INTERVAL_MS + 2 * srtt + FRESH_SLACK_MS;
  // Whether the vault's init takes exec ids (an older one refuses the field): asked once.
  let execIds = false;
  probeExecIds(session).then((ok) => {
    execIds = ok;
    log("master.exec_ids", { supported: ok });
  });
  (async () => {
    while (!stopping) {
      const quiet = Date.now() - lastActivity > PING_QUIET_AFTER_MS;
      await new Promise((r) =>
        setTimeout(r, TEST_PING_MS ?? (quiet ? PING_QUIET_INTERVAL_MS : PING_INTERVAL_MS))
      );
      // An unanswered ping only makes commands go on their own; QUIC's idle timeout ends
      // the connection (and us) if the vault is really gone, as it would a direct session.
      if (!stopping) await ping();
    }
  })();
  for (const sig of ["SIGTERM", "SIGINT", "SIGHUP"] as const) {
    Deno.addSignalListener(sig, () => void shutdown(sig));
  }
  session.conn.closed.then((c) => shutdown(`connection lost: ${c.reason}`));

  const reply = (conn: Deno.Conn, msg: Record<string, unknown>) =>
    writeAll(conn, encodeMessage(msg));
  const refuse = (conn: Deno.Conn, code: string, message: string) =>
    reply(conn, { ok: false, code, message, hint: "" }).catch(() => {});
  /** The vault did not answer a proof of life: this client goes on its own connection. */
  const refuseStale = async (conn: Deno.Conn) => {
    log("master.stale", { since_ms: Date.now() - lastAlive });
    await refuse(conn, "master.stale", "the master's connection to the vault is not answering");
    conn.close();
  };

  const serve = async (conn: Deno.UnixConn) => {
    const req = await readMessage(conn);
    if (!req) return conn.close();
    const op = String(req.op);
    if (op === "status") {
      await reply(conn, {
        ok: true,
        pid: Deno.pid,
        clients,
        streams,
        started_at: new Date(started).toISOString(),
        idle_ms: clients === 0 ? Date.now() - lastIdle : 0,
        persist_ms: persistMs,
        log: paths.log,
      });
      return conn.close();
    }
    if (op === "stop") {
      await reply(conn, { ok: true, pid: Deno.pid });
      return void await shutdown("stop");
    }
    if (op === "ping") {
      // A heartbeat for a client's loss detection: answered when the vault echoes (never on a
      // dead path; the client keeps its own time).
      if (session.conn.ping) await session.conn.ping();
      else if (!await ping()) return conn.close();
      await reply(conn, { ok: true }).catch(() => {});
      return conn.close();
    }
    busy();
    try {
      if (op === "hello") {
        let welcome = session.welcome;
        // A machine that restarted leaves our connection silently dead until QUIC's idle
        // timeout: without recent proof of life, ask the vault before taking a command.
        // An eager client (any but control and fresh-state commands) has each stream ask for
        // the proof instead: an exec carrying an id needs none (init runs an id once, and the
        // client sends it again on its own connection if this one turns out dead).
        const needPing = req.fresh || (stale() && req.eager !== true);
        log("master.hello", { eager: req.eager === true, proof_first: needPing });
        mark(`master.hello need_ping=${needPing}`);
        const status = needPing ? await quickPing() : null;
        if (needPing) mark("master.proof_ping_answered");
        if (needPing && !status) {
          // The background ping decides whether the connection is dead; this client just
          // doesn't wait for it.
          return void await refuseStale(conn);
        }
        if (status && req.fresh) {
          welcome = { ...welcome, state: status.state as AuthOk["state"] };
          if (typeof status.reason === "string") welcome.reason = status.reason;
          else delete welcome.reason;
        }
        hellos.add(conn);
        await reply(conn, { ok: true, pid: Deno.pid, welcome, exec_ids: execIds });
        // Held open until the client goes: its end is one client fewer.
        await conn.read(new Uint8Array(1)).catch(() => null);
        hellos.delete(conn);
        return conn.close();
      }
      if (op === "stream" || op === "exec") {
        // "exec": master_fast.ts's one round trip (no hello), its request following at once.
        const tag = op === "exec" ? StreamTag.exec : Number(req.tag);
        if (op === "exec" && !execIds) {
          await refuse(conn, "master.no_exec_ids", "this vault's init predates exec ids");
          return conn.close();
        }
        if (!isStreamTag(tag) || tag === StreamTag.control || tag === StreamTag.attest) {
          return void await refuse(conn, "master.bad_tag", `stream tag ${tag} cannot be relayed`);
        }
        const eager = (op === "exec" || req.eager === true) && execIds && tag === StreamTag.exec;
        // A stream without proof of life first (an exec with an id): when the vault does not
        // answer a ping in time and nothing came down yet, the client's connection is closed
        // and the client sends the same request on its own connection (init runs it once).
        const watch = new AbortController();
        const answered = { yet: false };
        let patience: ReturnType<typeof setTimeout> | undefined;
        const check = () =>
          !answered.yet && quickPing().then((status) => {
            if (status || answered.yet) return;
            log("master.stale", { since_ms: Date.now() - lastAlive, stream: streams + 1 });
            watch.abort(new Error("the master's connection to the vault is not answering"));
          });
        if (eager) {
          // With a recent proof the vault gets a few round trips to answer before it is asked.
          if (stale()) check();
          else patience = setTimeout(check, Math.max(HELLO_PING_MIN_MS, 8 * srtt));
        } else if (stale() && (log("master.proof", { tag }), !await quickPing())) {
          // Any other stream: the proof an eager client's hello did not ask for (right after a
          // hello that asked, the proof is fresh and this costs nothing).
          return void await refuseStale(conn);
        }
        let stream: ByteStream;
        try {
          mark("master.stream_req");
          stream = await session.openStream(tag);
          mark("master.stream_opened");
        } catch (err) {
          clearTimeout(patience);
          await refuse(conn, "master.stream_failed", String((err as Error).message));
          return conn.close();
        }
        streams++;
        log("master.stream", { tag, n: streams, eager, fast: op === "exec" });
        await reply(conn, { ok: true, pid: Deno.pid });
        try {
          await relay(conn, stream, tag, log, eager ? { signal: watch.signal, answered } : {});
        } finally {
          clearTimeout(patience);
        }
        return;
      }
      if (op === "control") {
        await withControl(async () => {
          await reply(conn, { ok: true });
          await relayControl(conn, session);
        });
        return;
      }
      await refuse(conn, "master.bad_op", `unknown op ${op}`);
      conn.close();
    } finally {
      done();
    }
  };
  // One user of the vault's control stream at a time.
  const withControl = <T>(fn: () => Promise<T>): Promise<T> => {
    const run = controlBusy.then(fn);
    controlBusy = run.then(() => {}, () => {});
    return run;
  };

  for await (const conn of listener) {
    const strangers = peers?.strangers() ?? [];
    if (strangers.length) {
      // Some connected peer is another user (their fds were just shut down). We cannot tell
      // which Deno connection is theirs, so this one is dropped unread too; ours fall back.
      log("master.peer_refused", { uids: strangers });
      try {
        conn.close();
      } catch { /* already */ }
      continue;
    }
    serve(conn as Deno.UnixConn).catch((err) => {
      log("master.client_error", { error: String((err as Error).message) });
      try {
        conn.close();
      } catch { /* already */ }
    });
  }
  return 0;
}

/**
 * Whether the vault's init takes an exec id: a request that a current init
 * parses and refuses without running anything (its working directory does not
 * exist), while an older one refuses the unknown field as a bad message.
 */
export async function probeExecIds(session: Pick<VaultSession, "openStream">): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const stream = await session.openStream(StreamTag.exec);
    const reader = new FrameReader(stream.readable);
    const writer = new FrameWriter(stream.writable);
    const nowhere = `/nonexistent-fly-vault-probe-${crypto.randomUUID()}`;
    await writer.send({
      type: "exec",
      argv: [`${nowhere}/none`],
      id: newExecId(),
      cwd: nowhere,
      env: {},
      tty: false,
    });
    const frame = await Promise.race([
      reader.next(),
      new Promise<null>((r) => timer = setTimeout(() => r(null), PING_TIMEOUT_MS)),
    ]);
    await writer.close();
    await reader.cancel().catch(() => {});
    const msg = frame?.kind === "message" ? frame.message as Record<string, unknown> : null;
    return msg !== null && !(msg.type === "error" && msg.code === "protocol.bad_message");
  } catch {
    return false;
  } finally {
    clearTimeout(timer);
  }
}

/** Pipes a unix connection and a vault stream both ways, half-closes passing through. */
async function relay(
  conn: Deno.UnixConn,
  stream: ByteStream,
  tag: StreamTag,
  log: (event: string, f?: Record<string, unknown>) => void,
  watch: { signal?: AbortSignal; answered?: { yet: boolean } } = {},
): Promise<void> {
  const local = connStream(conn, { framed: "read" });
  const seen = watch.answered;
  let from = stream.readable;
  if (seen) {
    from = from.pipeThrough(
      new TransformStream<Uint8Array, Uint8Array>({
        transform(chunk, c) {
          seen.yet = true;
          c.enqueue(chunk);
        },
      }),
    );
    if (TEST_DROP_EAGER) {
      // Test only: the vault's first word is lost as if the path had failed just before it
      // (the request did reach the vault): the client must send it again, init not run it.
      from = from.pipeThrough(
        new TransformStream<Uint8Array, Uint8Array>({
          transform(_chunk, c) {
            c.error(new Error("dropped (FLY_VAULT_TEST_MASTER_DROP)"));
          },
        }),
      );
    }
  }
  const up = (async () => {
    const from = local.readable.getReader();
    const to = stream.writable.getWriter();
    try {
      while (true) {
        const { value, done } = await from.read();
        if (done) return void await to.close();
        await to.write(value);
      }
    } catch (err) {
      // The client vanished mid-stream. Direct, its connection would drop and init would hang
      // up on an exec's command (sshd does the same): say so, then reset the vault's side.
      // Each client write is one whole frame, so between chunks a frame may be added.
      log("master.client_gone", { error: String((err as Error)?.message ?? err) });
      if (tag === StreamTag.exec && local.atFrameBoundary()) {
        await to.write(encodeMessage({ type: "signal", signal: "SIGHUP" })).catch(() => {});
      }
      await to.abort(err).catch(() => {});
      await stream.readable.cancel().catch(() => {});
      local.close();
    }
  })();
  const down = from.pipeTo(local.writable, { signal: watch.signal }).catch((err) => {
    // The vault's side ended abruptly (reset, or the connection died): the client hears EOF.
    log("master.stream_reset", { error: String(err?.message ?? err) });
    stream.writable.abort().catch(() => {});
    local.close();
  });
  await Promise.all([up, down]);
}

/**
 * Relays control frames between a client and the vault's control stream.
 * Each request gets replies until one that is not `progress`; when the client
 * leaves early, its outstanding replies are read and dropped so the next
 * client's first reply is its own.
 */
async function relayControl(conn: Deno.UnixConn, session: VaultSession): Promise<void> {
  const local = connStream(conn);
  const reader = new FrameReader(local.readable);
  const writer = new FrameWriter(local.writable);
  let outstanding = 0;
  let clientGone = false;
  let wake: (() => void) | undefined;
  const requests = (async () => {
    try {
      while (true) {
        const frame = await reader.next();
        if (frame === null) break;
        if (frame.kind !== "message") continue;
        outstanding++;
        wake?.();
        await session.control.writer.send(frame.message);
      }
    } catch { /* client gone */ }
    clientGone = true;
    wake?.();
  })();
  while (true) {
    if (outstanding === 0) {
      if (clientGone) break;
      await new Promise<void>((r) => wake = r);
      wake = undefined;
      continue;
    }
    const frame = await session.control.reader.next();
    if (frame === null) break;
    if (frame.kind !== "message") continue;
    const msg = frame.message as { type?: string };
    if (msg?.type !== "progress") outstanding--;
    if (!clientGone) await writer.send(msg).catch(() => {});
  }
  await requests;
  await writer.close();
  local.close();
}
