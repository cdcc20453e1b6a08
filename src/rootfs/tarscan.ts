/**
 * A streaming tar filter that validates every entry *before* its bytes reach
 * the real extractor (GNU tar).
 *
 * It parses exactly what GNU tar parses (ustar/POSIX prefix, GNU `L`/`K`
 * long names, pax `x`/`X`/`g` path/linkpath/size) and forwards the very bytes
 * it parsed, so there is no room for a parser differential: whatever header
 * GNU tar acts on has been checked here first. Anything it does not
 * understand exactly (sparse files, multi-volume, dump dirs, unknown types,
 * bad checksums, data on non-file entries) is refused rather than guessed.
 *
 * @module
 */
import { VaultError } from "../errors/mod.ts";

const BLOCK = 512;
const MAX_META = 1 << 20;

/** A refused archive: `code` is `rootfs.<reason>`, `entry` the offending path when there is one. */
export class RootfsError extends VaultError {
  override name = "RootfsError";
  readonly entry?: string;
  constructor(reason: string, message: string, entry?: string, hint?: string) {
    super(
      `rootfs.${reason}`,
      entry === undefined ? message : `entry "${entry}": ${message}`,
      hint ??
        "the rootfs tarball is unsafe or damaged; rebuild it (fly-vault build) and provision again",
    );
    this.entry = entry;
  }
}

/** What kind of thing an entry creates. */
export type EntryKind = "file" | "hardlink" | "symlink" | "dir" | "char" | "block" | "fifo";

/** One validated entry. */
export interface TarEntry {
  /** Normalised relative path ("" is the archive root). */
  path: string;
  kind: EntryKind;
  size: number;
  /** Hardlink target (normalised) or symlink target (verbatim). */
  linkpath?: string;
}

/** Options of {@link TarFilter}. */
export interface TarFilterOptions {
  maxEntries: number;
  /** Bytes free for the extraction; an entry larger than what is left is refused. */
  spaceLeft: number;
  /** Told about every entry skipped on purpose (device nodes under /dev). */
  onSkip?: (entry: TarEntry, why: string) => void;
  /** Told about every entry accepted. */
  onEntry?: (entry: TarEntry) => void;
}

/** Bytes to a string, one char per byte: names stay byte-exact whatever their encoding. */
export function bytesToLatin1(b: Uint8Array): string {
  let s = "";
  for (let i = 0; i < b.length; i += 4096) {
    s += String.fromCharCode.apply(null, Array.from(b.subarray(i, i + 4096)));
  }
  return s;
}

export function cstring(b: Uint8Array, start: number, len: number): string {
  let end = start;
  while (end < start + len && b[end] !== 0) end++;
  return bytesToLatin1(b.subarray(start, end));
}

/** For messages: shows UTF-8 names as such when they are valid UTF-8. */
function display(latin: string): string {
  const bytes = new Uint8Array(latin.length);
  for (let i = 0; i < latin.length; i++) bytes[i] = latin.charCodeAt(i);
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    return latin;
  }
}

export function parseNumber(b: Uint8Array, start: number, len: number, what: string): number {
  if (b[start] & 0x80) {
    if (b[start] === 0xff) throw new RootfsError("bad_header", `negative ${what} field`);
    let v = b[start] & 0x7f;
    for (let i = start + 1; i < start + len; i++) {
      v = v * 256 + b[i];
      if (v > Number.MAX_SAFE_INTEGER) throw new RootfsError("bad_header", `${what} too large`);
    }
    return v;
  }
  let i = start;
  const end = start + len;
  while (i < end && (b[i] === 0x20 || b[i] === 0x09)) i++;
  let v = 0;
  let digits = 0;
  while (i < end && b[i] >= 0x30 && b[i] <= 0x37) {
    v = v * 8 + (b[i] - 0x30);
    digits++;
    i++;
  }
  for (; i < end; i++) {
    if (b[i] !== 0 && b[i] !== 0x20) {
      throw new RootfsError("bad_header", `malformed ${what} field`);
    }
  }
  if (digits === 0) throw new RootfsError("bad_header", `empty ${what} field`);
  return v;
}

export function checksumOk(h: Uint8Array): boolean {
  const stored = parseNumber(h, 148, 8, "checksum");
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const c = i >= 148 && i < 156 ? 0x20 : h[i];
    unsigned += c;
    signed += c > 127 ? c - 256 : c;
  }
  return stored === unsigned || stored === signed;
}

export function isZeroBlock(h: Uint8Array): boolean {
  for (let i = 0; i < BLOCK; i++) if (h[i] !== 0) return false;
  return true;
}

/** Parses pax records; keys and values are kept as latin1 strings (byte-exact). */
export function parsePax(data: Uint8Array): Map<string, string> {
  const out = new Map<string, string>();
  let off = 0;
  while (off < data.length) {
    if (data[off] === 0) break; // padding after the last record
    let sp = off;
    while (sp < data.length && data[sp] !== 0x20) sp++;
    const len = Number(bytesToLatin1(data.subarray(off, sp)));
    if (!Number.isInteger(len) || len <= sp - off + 1 || off + len > data.length) {
      throw new RootfsError("bad_header", "malformed pax extended header");
    }
    const rec = data.subarray(sp + 1, off + len);
    if (rec[rec.length - 1] !== 0x0a) {
      throw new RootfsError("bad_header", "pax record does not end in a newline");
    }
    const eq = rec.indexOf(0x3d);
    if (eq < 1) throw new RootfsError("bad_header", "pax record without a key");
    out.set(
      bytesToLatin1(rec.subarray(0, eq)),
      bytesToLatin1(rec.subarray(eq + 1, rec.length - 1)),
    );
    off += len;
  }
  return out;
}

/** Splits a member name into components, refusing absolute paths and `..`. */
export function normalise(raw: string, what = "path"): string {
  if (raw.includes("\0")) {
    // GNU tar would cut the name at the NUL: the name checked here would not be the one used.
    throw new RootfsError("bad_header", `${what} contains a NUL byte`, display(raw));
  }
  if (raw.startsWith("/")) {
    throw new RootfsError("absolute_path", `absolute ${what} "${display(raw)}"`, display(raw));
  }
  const parts: string[] = [];
  for (const p of raw.split("/")) {
    if (p === "" || p === ".") continue;
    if (p === "..") {
      throw new RootfsError("dotdot", `${what} "${display(raw)}" contains ".."`, display(raw));
    }
    parts.push(p);
  }
  return parts.join("/");
}

type Mode = "header" | "data" | "meta" | "end";

/**
 * Push decompressed tar bytes in with {@link TarFilter.push}; validated bytes
 * come out through the `forward` callback, in order, ready for GNU tar.
 */
export class TarFilter {
  readonly opts: TarFilterOptions;
  #forward: (bytes: Uint8Array) => void;
  #mode: Mode = "header";
  #head = new Uint8Array(BLOCK);
  #headFill = 0;
  /** Bytes (data + padding) left in the current member. */
  #remaining = 0;
  #forwardData = true;
  /** Extended headers waiting for the entry they describe. */
  #pending: Uint8Array[] = [];
  #meta: Uint8Array | null = null;
  #metaFill = 0;
  #metaType = "";
  #metaSize = 0;
  #longName: string | undefined;
  #longLink: string | undefined;
  #pax: Map<string, string> | undefined;
  #symlinks = new Set<string>();
  #nonDirs = new Set<string>();
  #spaceLeft: number;
  /** Entries accepted (forwarded to tar). */
  entries = 0;
  /** Entries seen, skipped included. */
  seen = 0;
  /** Total decompressed bytes pushed. */
  bytes = 0;

  constructor(opts: TarFilterOptions, forward: (bytes: Uint8Array) => void) {
    this.opts = opts;
    this.#forward = forward;
    this.#spaceLeft = opts.spaceLeft;
  }

  /** True once the end-of-archive block was seen: later bytes are ignored. */
  get ended(): boolean {
    return this.#mode === "end";
  }

  /** Feeds the next decompressed bytes. Throws {@link RootfsError} on a refused entry. */
  push(chunk: Uint8Array): void {
    this.bytes += chunk.length;
    let off = 0;
    while (off < chunk.length) {
      switch (this.#mode) {
        case "end":
          return;
        case "data": {
          const n = Math.min(this.#remaining, chunk.length - off);
          if (this.#forwardData) this.#forward(chunk.subarray(off, off + n));
          off += n;
          this.#remaining -= n;
          if (this.#remaining === 0) this.#mode = "header";
          break;
        }
        case "meta": {
          const n = Math.min(this.#remaining, chunk.length - off);
          const part = chunk.subarray(off, off + n);
          this.#pending.push(part.slice());
          const keep = Math.min(n, this.#metaSize - this.#metaFill);
          if (keep > 0) {
            this.#meta!.set(part.subarray(0, keep), this.#metaFill);
            this.#metaFill += keep;
          }
          off += n;
          this.#remaining -= n;
          if (this.#remaining === 0) {
            this.#mode = "header";
            this.#metaDone();
          }
          break;
        }
        case "header": {
          const n = Math.min(BLOCK - this.#headFill, chunk.length - off);
          this.#head.set(chunk.subarray(off, off + n), this.#headFill);
          this.#headFill += n;
          off += n;
          if (this.#headFill === BLOCK) {
            this.#headFill = 0;
            this.#header(this.#head.slice());
          }
          break;
        }
      }
    }
  }

  /** Call at the end of the decompressed stream: refuses an archive cut inside a member. */
  finish(): void {
    if (this.#mode === "end") return;
    if (this.#mode === "header" && this.#headFill === 0 && this.#pending.length === 0) {
      // EOF without an end-of-archive marker between members: GNU tar accepts it; so do we.
      this.#forward(new Uint8Array(2 * BLOCK));
      this.#mode = "end";
      return;
    }
    throw new RootfsError("truncated_tar", "the tar stream ends inside an entry");
  }

  #header(h: Uint8Array): void {
    if (isZeroBlock(h)) {
      if (this.#pending.length) {
        throw new RootfsError("bad_header", "extended header not followed by an entry");
      }
      // GNU tar stops at the first zero block (without --ignore-zeros); so do we.
      this.#forward(new Uint8Array(2 * BLOCK));
      this.#mode = "end";
      return;
    }
    if (!checksumOk(h)) {
      throw new RootfsError("bad_header", "tar header checksum mismatch (corrupt or crafted)");
    }
    const type = String.fromCharCode(h[156]);
    let size = parseNumber(h, 124, 12, "size");
    if (type === "L" || type === "K" || type === "x" || type === "X" || type === "g") {
      if (size > MAX_META) {
        throw new RootfsError("bad_header", `extended header of ${size} bytes is too large`);
      }
      if (
        (type === "L" && this.#longName !== undefined) ||
        (type === "K" && this.#longLink !== undefined) ||
        ((type === "x" || type === "X") && this.#pax !== undefined)
      ) {
        throw new RootfsError("bad_header", `repeated extended header '${type}' for one entry`);
      }
      if (type === "g" && this.#pending.length) {
        // Forwarding it would also forward the pending headers, detached from the entry
        // they were checked with: GNU tar would apply them to a different one.
        throw new RootfsError("bad_header", "global pax header between an entry's headers");
      }
      this.#pending.push(h);
      this.#metaType = type;
      this.#metaSize = size;
      this.#meta = new Uint8Array(size);
      this.#metaFill = 0;
      this.#remaining = Math.ceil(size / BLOCK) * BLOCK;
      if (this.#remaining === 0) this.#metaDone();
      else this.#mode = "meta";
      return;
    }

    // "ustar\0": POSIX, whose prefix field GNU tar joins to the name (GNU's "ustar " is not).
    const posix = h[257] === 0x75 && h[258] === 0x73 && h[259] === 0x74 && h[260] === 0x61 &&
      h[261] === 0x72 && h[262] === 0;
    let raw = cstring(h, 0, 100);
    if (posix && h[345] !== 0) raw = cstring(h, 345, 155) + "/" + raw;
    if (this.#longName !== undefined) raw = this.#longName;
    let rawLink = cstring(h, 157, 100);
    if (this.#longLink !== undefined) rawLink = this.#longLink;
    const pax = this.#pax;
    if (pax) {
      if (pax.has("path")) raw = pax.get("path")!;
      if (pax.has("linkpath")) rawLink = pax.get("linkpath")!;
      if (pax.has("size")) {
        const s = pax.get("size")!;
        if (!/^[0-9]+$/.test(s) || Number(s) > Number.MAX_SAFE_INTEGER) {
          throw new RootfsError("bad_header", `bad pax size "${s}"`, display(raw));
        }
        size = Number(s);
      }
    }
    const shown = display(raw);
    const path = normalise(raw);
    let kind: EntryKind;
    switch (type) {
      case "0":
      case "\0":
      case "7":
        // GNU tar extracts any regular-type member named with a trailing slash as a directory.
        kind = raw.endsWith("/") ? "dir" : "file";
        break;
      case "1":
        kind = "hardlink";
        break;
      case "2":
        kind = "symlink";
        break;
      case "3":
        kind = "char";
        break;
      case "4":
        kind = "block";
        break;
      case "5":
        kind = "dir";
        break;
      case "6":
        kind = "fifo";
        break;
      default:
        throw new RootfsError(
          "unsupported_type",
          `unsupported entry type '${type === "\0" ? "\\0" : type}'`,
          shown,
        );
    }
    if (kind !== "file" && size !== 0) {
      throw new RootfsError("bad_header", `a ${kind} entry must not carry data`, shown);
    }
    this.seen++;
    if (this.seen > this.opts.maxEntries) {
      throw new RootfsError(
        "too_many_entries",
        `more than ${this.opts.maxEntries} entries`,
        shown,
        "raise the entry limit, or make the image smaller",
      );
    }
    if (path === "" && kind !== "dir") {
      throw new RootfsError("bad_header", `a ${kind} cannot replace the root directory`, shown);
    }
    this.#checkNotThroughSymlink(path, shown, true);

    let linkpath: string | undefined;
    if (kind === "hardlink") {
      if (rawLink.startsWith("/") || rawLink.split("/").includes("..")) {
        throw new RootfsError(
          "hardlink_escape",
          `hardlink to "${display(rawLink)}" points outside the archive`,
          shown,
        );
      }
      linkpath = normalise(rawLink, "hardlink target");
      this.#checkNotThroughSymlink(linkpath, shown, false);
      if (!this.#nonDirs.has(linkpath)) {
        throw new RootfsError(
          "hardlink_escape",
          `hardlink to "${display(rawLink)}", which is not an earlier file of the archive`,
          shown,
        );
      }
    } else if (kind === "symlink") {
      if (rawLink.includes("\0")) {
        throw new RootfsError("bad_header", "symlink target contains a NUL byte", shown);
      }
      linkpath = rawLink;
    }

    const entry: TarEntry = { path, kind, size, linkpath };
    const pending = this.#pending;
    this.#pending = [];
    this.#longName = this.#longLink = this.#pax = undefined;
    this.#remaining = Math.ceil(size / BLOCK) * BLOCK;

    if (kind === "char" || kind === "block" || kind === "fifo") {
      if (path === "dev" || path.startsWith("dev/")) {
        // init mounts its own /dev over this directory: the node would never be seen.
        this.opts.onSkip?.(entry, `${kind} device under /dev skipped`);
        return;
      }
      throw new RootfsError(
        "device",
        `${kind === "fifo" ? "fifo" : `${kind} device`} outside /dev`,
        shown,
      );
    }
    if (size > this.#spaceLeft) {
      throw new RootfsError(
        "no_space",
        `needs ${size} bytes but only ${Math.max(0, this.#spaceLeft)} are left on the volume`,
        shown,
        "grow the volume (fly volumes extend) or use a smaller image",
      );
    }
    this.#spaceLeft -= Math.ceil(size / 4096) * 4096;

    // A hardlink to a symlink is one more name for that symlink: writes through it escape too.
    if (kind === "symlink" || (kind === "hardlink" && this.#symlinks.has(linkpath!))) {
      this.#symlinks.add(path);
    } else this.#symlinks.delete(path);
    if (kind !== "dir") this.#nonDirs.add(path);
    this.entries++;
    this.opts.onEntry?.(entry);
    for (const p of pending) this.#forward(p);
    this.#forward(h);
    if (this.#remaining > 0) {
      this.#mode = "data";
      this.#forwardData = true;
    }
  }

  /** Refuses `path` when one of its parents (or itself, when `self`) was a symlink entry. */
  #checkNotThroughSymlink(path: string, shown: string, self: boolean): void {
    if (this.#symlinks.size === 0 || path === "") return;
    let i = path.indexOf("/");
    while (i !== -1) {
      const parent = path.slice(0, i);
      if (this.#symlinks.has(parent)) {
        throw new RootfsError(
          "through_symlink",
          `would be written through the symlink "${display(parent)}"`,
          shown,
        );
      }
      i = path.indexOf("/", i + 1);
    }
    if (self && this.#symlinks.has(path)) {
      throw new RootfsError("through_symlink", "replaces an earlier symlink of the archive", shown);
    }
  }

  #metaDone(): void {
    const data = this.#meta!;
    this.#meta = null;
    switch (this.#metaType) {
      case "L":
        this.#longName = cstring(data, 0, data.length);
        break;
      case "K":
        this.#longLink = cstring(data, 0, data.length);
        break;
      case "x":
      case "X":
        this.#pax = parsePax(data);
        this.#checkPaxKeys(this.#pax, false);
        break;
      case "g": {
        this.#checkPaxKeys(parsePax(data), true);
        // A global header applies to what follows and is not an entry: pass it on now.
        for (const p of this.#pending) this.#forward(p);
        this.#pending = [];
        break;
      }
    }
  }

  #checkPaxKeys(pax: Map<string, string>, global: boolean): void {
    for (const key of pax.keys()) {
      if (key.startsWith("GNU.sparse.") || key.startsWith("GNU.volume.")) {
        throw new RootfsError("unsupported_type", `pax key ${key} (sparse or multi-volume)`);
      }
      if (global && (key === "path" || key === "linkpath" || key === "size")) {
        throw new RootfsError("bad_header", `global pax header sets "${key}"`);
      }
    }
  }
}

/** For messages about names that came from an archive. */
export function displayName(latinName: string): string {
  return display(latinName);
}
