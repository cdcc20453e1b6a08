/**
 * Test helpers for rootfs tests (unit tests here and tests/provision_*):
 * crafting tar headers no honest tar writer would produce, and a manifest
 * of a tree (types, modes, owners, mtimes, link targets, hardlink groups,
 * xattrs, content hashes) to compare two extractions.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { gzipSync } from "node:zlib";

/** Fields of a crafted header. */
export interface CraftEntry {
  name: string;
  type?: string;
  size?: number;
  linkname?: string;
  mode?: number;
  /** POSIX ustar prefix (joined to the name by GNU tar). */
  prefix?: string;
  /** Break the checksum on purpose. */
  badChecksum?: boolean;
  data?: Uint8Array;
}

const enc = new TextEncoder();

function putString(b: Uint8Array, off: number, len: number, s: string) {
  const bytes = enc.encode(s);
  b.set(bytes.subarray(0, len), off);
}

function putOctal(b: Uint8Array, off: number, len: number, v: number) {
  putString(b, off, len, v.toString(8).padStart(len - 1, "0") + "\0");
}

/** One ustar header block (+ data blocks when `data` is given). */
export function craft(e: CraftEntry): Uint8Array {
  const data = e.data ?? new Uint8Array(0);
  const size = e.size ?? data.length;
  const h = new Uint8Array(512);
  putString(h, 0, 100, e.name);
  putOctal(h, 100, 8, e.mode ?? 0o644);
  putOctal(h, 108, 8, 0);
  putOctal(h, 116, 8, 0);
  putOctal(h, 124, 12, size);
  putOctal(h, 136, 12, 1_700_000_000);
  h.fill(0x20, 148, 156);
  h[156] = (e.type ?? "0").charCodeAt(0);
  putString(h, 157, 100, e.linkname ?? "");
  putString(h, 257, 6, "ustar\0");
  putString(h, 263, 2, "00");
  if (e.prefix) putString(h, 345, 155, e.prefix);
  let sum = 0;
  for (const c of h) sum += c;
  if (e.badChecksum) sum += 1;
  putString(h, 148, 8, sum.toString(8).padStart(6, "0") + "\0 ");
  const padded = Math.ceil(data.length / 512) * 512;
  const out = new Uint8Array(512 + padded);
  out.set(h);
  out.set(data, 512);
  return out;
}

/** A pax extended header ('x') carrying `records`. */
export function paxHeader(records: Record<string, string>, type = "x"): Uint8Array {
  let body = "";
  for (const [k, v] of Object.entries(records)) {
    const rest = ` ${k}=${v}\n`;
    let len = rest.length + 1;
    while (String(len).length + rest.length !== len) len = String(len).length + rest.length;
    body += `${len}${rest}`;
  }
  return craft({ name: "PaxHeader", type, data: enc.encode(body) });
}

/** Concatenates blocks and adds the end-of-archive marker. */
export function tarOf(...parts: Uint8Array[]): Uint8Array {
  const total = parts.reduce((n, p) => n + p.length, 0) + 1024;
  const out = new Uint8Array(total);
  let off = 0;
  for (const p of parts) (out.set(p, off), off += p.length);
  return out;
}

/** gzip of `bytes`. */
export function gz(bytes: Uint8Array): Uint8Array {
  return new Uint8Array(gzipSync(bytes));
}

/** A one-shot stream of `bytes` in chunks of `chunk` bytes. */
export function streamOf(bytes: Uint8Array, chunk = 64 * 1024): ReadableStream<Uint8Array> {
  let off = 0;
  return new ReadableStream({
    pull(c) {
      if (off >= bytes.length) return c.close();
      c.enqueue(bytes.slice(off, off + chunk));
      off += chunk;
    },
  });
}

/** sha256 hex of `bytes`. */
export function sha256(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

/** Runs a command, failing loudly; returns stdout. */
export async function sh(cmd: string, args: string[], cwd?: string): Promise<string> {
  const r = await new Deno.Command(cmd, { args, cwd, stdout: "piped", stderr: "piped" }).output();
  if (!r.success) {
    throw new Error(`${cmd} ${args.join(" ")}: ${new TextDecoder().decode(r.stderr)}`);
  }
  return new TextDecoder().decode(r.stdout);
}

/** One line per path: what must be equal between two extractions. */
export async function manifest(
  root: string,
  opts: { exclude?: (rel: string) => boolean; content?: boolean } = {},
): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const inodes = new Map<number, string[]>();
  const walk = async (rel: string) => {
    const abs = rel ? `${root}/${rel}` : root;
    const st = await Deno.lstat(abs);
    const type = st.isSymlink ? "l" : st.isDirectory ? "d" : st.isFile ? "f" : "o";
    let line =
      `${type} mode=${(st.mode! & 0o7777).toString(8)} fmt=${(st.mode! >> 12).toString(8)}` +
      ` uid=${st.uid} gid=${st.gid}`;
    if (type !== "l" && type !== "d") line += ` mtime=${st.mtime?.getTime()}`;
    if (type === "l") line += ` -> ${await Deno.readLink(abs)}`;
    if (type === "f") {
      line += ` size=${st.size}`;
      if (opts.content !== false) {
        line += ` sha=${createHash("sha256").update(await Deno.readFile(abs)).digest("hex")}`;
      }
      if (st.nlink! > 1) {
        const list = inodes.get(st.ino!) ?? [];
        list.push(rel);
        inodes.set(st.ino!, list);
      }
    }
    if (type === "o") line += ` rdev=${st.rdev}`;
    out.set(rel || ".", line);
    if (type === "d") {
      const names: string[] = [];
      for await (const e of Deno.readDir(abs)) names.push(e.name);
      for (const n of names.sort()) {
        const child = rel ? `${rel}/${n}` : n;
        if (opts.exclude?.(child)) continue;
        await walk(child);
      }
      // Directory mtimes are compared after the children were read (reading does not change them).
      out.set(rel || ".", `${line} mtime=${st.mtime?.getTime()}`);
    }
  };
  await walk("");
  for (const group of inodes.values()) {
    const sorted = group.sort();
    for (const p of sorted) out.set(p, `${out.get(p)} links=[${sorted.join(",")}]`);
  }
  const xattrs = await new Deno.Command("getfattr", {
    args: ["-R", "-h", "-d", "-m", "-", "-e", "hex", "."],
    cwd: root,
    stdout: "piped",
    stderr: "null",
  }).output();
  let current = "";
  for (const line of new TextDecoder().decode(xattrs.stdout).split("\n")) {
    if (line.startsWith("# file: ")) current = line.slice(8).replace(/^\.\/?/, "") || ".";
    else if (line.includes("=") && out.has(current)) {
      out.set(current, `${out.get(current)} xattr:${line}`);
    }
  }
  return out;
}

/** The differences between two manifests, at most `max`, for assertion messages. */
export function diffManifests(a: Map<string, string>, b: Map<string, string>, max = 20): string[] {
  const out: string[] = [];
  for (const [k, v] of a) {
    if (b.get(k) !== v) out.push(`${k}:\n  ours: ${b.get(k)}\n  ref:  ${v}`);
    if (out.length >= max) return out;
  }
  for (const k of b.keys()) {
    if (!a.has(k)) out.push(`${k}: only in ours`);
    if (out.length >= max) break;
  }
  return out;
}
