/**
 * `fly-vault exec` through a live master without loading the client first
 * (issue 10 item 2: start-up is most of a command's time). The usual path
 * parses config.toml (zod, the transport module) only to name the master's
 * socket; here the master also answers under a second name, a hash of the
 * raw bytes it was started from (config.toml, known_vaults, the token in the
 * environment, …), so this module reads those files, hashes them, sends the
 * exec request at once, and loads the rest of the client while the request
 * crosses the network.
 *
 * Whenever anything is unusual (no such name, a loose file mode, a master that
 * refuses, -e/--tty/--no-persist) this returns null before anything reached
 * the vault and the command takes the usual path. Imports only light modules.
 *
 * @module
 */
// No node:path: loading Node's compatibility layer costs ~4 ms before the request could go.
/** node:path's join for the paths here (no `..` inside). */
export const join = (...parts: string[]) => parts.join("/").replace(/\/+/g, "/");
/** node:path's dirname for an absolute, normalised path. */
export const dirname = (path: string) => path.slice(0, Math.max(path.lastIndexOf("/"), 1));
/** An absolute, normalised path (`.` and `..` resolved), as node:path's resolve makes it. */
export function resolve(path: string): string {
  const out: string[] = [];
  for (const part of (path.startsWith("/") ? path : `${Deno.cwd()}/${path}`).split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") out.pop();
    else out.push(part);
  }
  return `/${out.join("/")}`;
}
// Not protocol/mod.ts: that builds every zod schema, which is what this path defers.
import { encodeMessage } from "../protocol/frame.ts";
import type { ExecInvocation } from "./cli.ts";
import { mark } from "./timing.ts";

/** The exec stream's tag (protocol/tags.ts), without loading the protocol module. */
const EXEC_TAG = 4;

/** The master's run directory for a config directory (XDG_RUNTIME_DIR/fly-vault when set). */
export function runDirOf(configDir: string): string {
  const xdg = Deno.env.get("XDG_RUNTIME_DIR");
  return resolve(xdg ? join(xdg, "fly-vault") : join(configDir, "run"));
}

/** Hex sha-256. */
async function hex(bytes: Uint8Array): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * The unix-socket wire's version, part of both socket names (as is master.ts's
 * location): a client never talks to a master of another build.
 */
export const MASTER_WIRE = 1;

/** Where master.ts is (the build, in the fast name), known without loading it. */
export const MASTER_BUILD = new URL("./master.ts", import.meta.url).href;

/** Hex sha-256 of a private file's bytes ("" when missing), or null (see privateBytes). */
export async function fileDigest(path: string): Promise<string | null> {
  const bytes = privateBytes(path);
  return bytes && await hex(bytes);
}

/** A file's bytes (empty when missing), or null when it is another's or open to others. */
function privateBytes(path: string): Uint8Array | null {
  try {
    const st = Deno.statSync(path);
    if (((st.mode ?? 0) & 0o077) !== 0 || (st.uid !== Deno.uid() && st.uid !== 0)) return null;
    return Deno.readFileSync(path);
  } catch (err) {
    return err instanceof Deno.errors.NotFound ? new Uint8Array(0) : null;
  }
}

/**
 * The fast name of a master: every input the usual path's socket name rests
 * on, by its raw bytes (the wire version and the build as well).
 */
export async function fastKey(
  o: { configPath: string; vault: string },
): Promise<{ key: string; dir: string } | null> {
  const config = privateBytes(o.configPath);
  const configDir = dirname(o.configPath);
  const known = privateBytes(join(configDir, "known_vaults"));
  if (!config || config.length === 0 || !known) return null;
  const text = JSON.stringify([
    "fast",
    MASTER_WIRE,
    MASTER_BUILD,
    Deno.uid(),
    o.configPath,
    await hex(config),
    await hex(known),
    Deno.env.get("FLY_VAULT_ACCESS_TOKEN") ?? "",
    o.vault,
  ]);
  const key = (await hex(new TextEncoder().encode(text))).slice(0, 24);
  let dir = runDirOf(configDir);
  if (join(dir, `${key}.fast.0000000`).length > 100) dir = `/tmp/fly-vault-${Deno.uid()}`;
  return { key, dir };
}

/** config.toml's path, as config.ts's configPath says (null: no HOME to find it by). */
function configPathOf(flag?: string): string | null {
  if (flag) return resolve(flag);
  const env = Deno.env.get("FLY_VAULT_CONFIG_DIR");
  if (env) return resolve(join(env, "config.toml"));
  const xdg = Deno.env.get("XDG_CONFIG_HOME");
  const home = Deno.env.get("HOME");
  if (!xdg && !home) return null;
  return resolve(join(xdg || join(home!, ".config"), "fly-vault", "config.toml"));
}

/** The socket the fast name points to, when the name, the directory and the socket are ours. */
function fastSocket(dir: string, key: string): string | null {
  try {
    const d = Deno.lstatSync(dir);
    if (!d.isDirectory || d.uid !== Deno.uid() || ((d.mode ?? 0) & 0o077) !== 0) return null;
    const alias = join(dir, `${key}.fast`);
    const link = Deno.lstatSync(alias);
    if (!link.isSymlink || link.uid !== Deno.uid()) return null;
    const target = Deno.readLinkSync(alias);
    if (target.includes("/") || !target.endsWith(".sock")) return null;
    const socket = join(dir, target);
    const st = Deno.lstatSync(socket);
    return st.isSocket && st.uid === Deno.uid() ? socket : null;
  } catch {
    return null;
  }
}

/** Reads the master's one-frame answer (5-byte header, JSON), or null. */
async function readReply(conn: Deno.Conn): Promise<Record<string, unknown> | null> {
  const exactly = async (n: number) => {
    const out = new Uint8Array(n);
    for (let off = 0; off < n;) {
      const got = await conn.read(out.subarray(off));
      if (got === null) return null;
      off += got;
    }
    return out;
  };
  const head = await exactly(5);
  if (!head || head[4] !== 0) return null;
  const length = new DataView(head.buffer).getUint32(0);
  if (length < 1 || length > 64 * 1024) return null;
  const body = await exactly(length - 1);
  if (!body) return null;
  const value = JSON.parse(new TextDecoder().decode(body));
  return typeof value === "object" && value !== null ? value : null;
}

/**
 * Runs `inv` through its vault's master by the fast name; resolves to the
 * exit status, or null when the usual path must run the command instead
 * (nothing reached the vault then).
 */
export async function fastExec(inv: ExecInvocation, polluted: boolean): Promise<number | null> {
  if (inv.globals.persist === false || inv.tty || inv.env?.length) return null;
  const configPath = configPathOf(inv.globals.config);
  if (!configPath) return null;
  const named = await fastKey({ configPath, vault: inv.vault }).catch(() => null);
  const socket = named && fastSocket(named.dir, named.key);
  if (!socket) return null;
  let conn: Deno.UnixConn;
  try {
    conn = await Deno.connect({ transport: "unix", path: socket });
  } catch {
    return null;
  }
  const id = Array.from(
    crypto.getRandomValues(new Uint8Array(16)),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("");
  const argv = inv.shell ? [inv.argv.join(" ")] : inv.argv;
  // As execCommand sends it: `shell` only when set, an argv request keeps an older init's shape.
  const request = encodeMessage({
    type: "exec",
    argv,
    ...(inv.shell ? { shell: true } : {}),
    id,
    env: {},
    cwd: inv.cwd,
    tty: false,
  });
  const framed = new Uint8Array(4 + request.length);
  new DataView(framed.buffer).setUint32(0, request.length);
  framed.set(request, 4);
  const op = encodeMessage({ op: "exec", tag: EXEC_TAG });
  const first = new Uint8Array(op.length + framed.length);
  first.set(op);
  first.set(framed, op.length);
  try {
    for (let off = 0; off < first.length;) off += await conn.write(first.subarray(off));
  } catch {
    conn.close();
    return null;
  }
  mark("client.fast_sent");
  // While the request crosses the network: the rest of the client, and the master's answer.
  const loading = (async () => {
    await import("./zod_jitless.ts");
    const [master, exec] = await Promise.all([import("./master.ts"), import("./exec.ts")]);
    return { master, exec };
  })();
  const reply = await readReply(conn).catch(() => null);
  if (reply?.ok !== true) {
    // Refused (or gone) before forwarding a byte: the usual path, which says why with -v.
    conn.close();
    await loading.catch(() => {});
    return null;
  }
  const { master, exec } = await loading;
  mark("client.fast_loaded");
  if (inv.globals.verbose) {
    console.error(
      `fly-vault: using the master for ${inv.vault} (pid ${reply.pid}): pinned identity verified ` +
        `when it connected, answering now`,
    );
  }
  return await master.runFastExec(conn, request, id, inv, exec, polluted);
}
