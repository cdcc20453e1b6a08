/**
 * A streaming tar filter that validates every entry *before* its bytes reach
 * the real extractor (GNU tar).
 *
 * It reads headers the way GNU tar 1.34 reads them (ustar/POSIX prefix, GNU
 * `L`/`K` long names, pax `x`/`X`/`g` records, base-256 and octal numbers,
 * signed and unsigned checksums, the first zero block as the end) and
 * forwards the very bytes it parsed. Wherever GNU tar would read a header in
 * a way this filter cannot be certain to reproduce — a pax record with extra
 * blanks, bytes hidden after a NUL, a long name without its NUL, a number in
 * a form tar parses differently, a keyword tar acts on that we do not model
 * — the archive is refused (`rootfs.ambiguous`, `rootfs.unsupported_type`,
 * `rootfs.bad_header`) rather than guessed. `tar_differential_test.ts` holds
 * this to GNU tar's own listing over generated archives.
 *
 * @module
 */
import { printable, VaultError } from "../errors/mod.ts";

const BLOCK = 512;
const MAX_META = 1 << 20;
const MAX_ID = 0xffff_ffff;

/** An archive name made safe for a message: valid UTF-8 shown as such, controls escaped. */
export function shownName(latin: string): string {
  return printable(display(latin), { maxLength: 300 });
}

/** A refused archive: `code` is `rootfs.<reason>`, `entry` the offending path when there is one. */
export class RootfsError extends VaultError {
  override name = "RootfsError";
  /** The entry's name as decoded from the archive (not escaped: escape before printing). */
  readonly entry?: string;
  constructor(reason: string, message: string, entry?: string, hint?: string) {
    super(
      `rootfs.${reason}`,
      entry === undefined ? message : `entry "${printable(entry, { maxLength: 300 })}": ${message}`,
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
  /** Permission bits (07777) as GNU tar applies them. */
  mode: number;
  uid: number;
  gid: number;
  /** Modification time, whole seconds. */
  mtime: number;
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

/** The NUL-terminated string in `b[start, start+len)`, byte-exact. */
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

function ambiguous(message: string, entry?: string): RootfsError {
  return new RootfsError(
    "ambiguous",
    message,
    entry,
    "GNU tar could read this header differently from the filter, so it is refused; " +
      "rebuild the tarball with GNU tar or fly-vault build",
  );
}

/**
 * A numeric header field. GNU tar accepts base-256 only with a first byte of
 * 0x80 (positive) or 0xff (negative), and octal after optional blanks, ended
 * by a NUL or a blank (it ignores what follows). Anything else — an empty
 * field, which tar reads as 0 or as an error depending on NULs and blanks, a
 * leading NUL, which tar skips, other high bytes, base-64 — is refused, so
 * a value returned here is the value tar reads. `octalOnly` is the checksum.
 */
export function parseNumber(
  b: Uint8Array,
  start: number,
  len: number,
  what: string,
  octalOnly = false,
): number {
  const end = start + len;
  const first = b[start];
  if (first & 0x80) {
    if (octalOnly) throw ambiguous(`${what} field is not octal`);
    if (first === 0xff) throw new RootfsError("bad_header", `negative ${what} field`);
    if (first !== 0x80) {
      throw ambiguous(`${what} field starts with byte 0x${first.toString(16)} (not base-256)`);
    }
    let v = 0;
    for (let i = start + 1; i < end; i++) {
      v = v * 256 + b[i];
      if (v > Number.MAX_SAFE_INTEGER) throw new RootfsError("bad_header", `${what} too large`);
    }
    return v;
  }
  let i = start;
  while (i < end && (b[i] === 0x20 || b[i] === 0x09)) i++;
  let v = 0;
  let digits = 0;
  while (i < end && b[i] >= 0x30 && b[i] <= 0x37) {
    v = v * 8 + (b[i] - 0x30);
    digits++;
    i++;
  }
  for (; i < end; i++) {
    if (b[i] !== 0 && b[i] !== 0x20) throw ambiguous(`malformed ${what} field`);
  }
  if (digits === 0) throw ambiguous(`empty ${what} field`);
  return v;
}

/** True when the header's checksum matches, counted unsigned (POSIX) or signed (old Sun tar). */
export function checksumOk(h: Uint8Array): boolean {
  const stored = parseNumber(h, 148, 8, "checksum", true);
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const c = i >= 148 && i < 156 ? 0x20 : h[i];
    unsigned += c;
    signed += c > 127 ? c - 256 : c;
  }
  return stored === unsigned || stored === signed;
}

/** True for an all-zero block (GNU tar's end of archive). */
export function isZeroBlock(h: Uint8Array): boolean {
  for (let i = 0; i < BLOCK; i++) if (h[i] !== 0) return false;
  return true;
}

/** Keywords GNU tar 1.34 acts on (exact), besides the `SCHILY.xattr.` prefix. */
const TAR_KEYWORDS = new Set([
  "atime",
  "charset",
  "comment",
  "ctime",
  "gid",
  "gname",
  "linkpath",
  "mtime",
  "path",
  "size",
  "uid",
  "uname",
  "GNU.dumpdir",
  "GNU.sparse.major",
  "GNU.sparse.map",
  "GNU.sparse.minor",
  "GNU.sparse.name",
  "GNU.sparse.numblocks",
  "GNU.sparse.numbytes",
  "GNU.sparse.offset",
  "GNU.sparse.realsize",
  "GNU.sparse.size",
  "GNU.volume.filename",
  "GNU.volume.label",
  "GNU.volume.offset",
  "GNU.volume.size",
  "RHT.security.selinux",
  "SCHILY.acl.access",
  "SCHILY.acl.default",
]);

/** True when GNU tar does something with a pax record of this keyword (else it ignores it). */
export function tarKnowsKeyword(key: string): boolean {
  return TAR_KEYWORDS.has(key) || key.startsWith("SCHILY.xattr.");
}

/**
 * Parses pax records; keys and values are kept as latin1 strings (byte-exact).
 *
 * GNU tar skips blanks before and after the length, stops silently at a NUL
 * where a record should start, and on a malformed record reports an error but
 * keeps the records before it and extracts the entry anyway. Only the
 * canonical form `<decimal length> <keyword>=<value>\n` is accepted here;
 * everything else, and a keyword given twice, is `rootfs.ambiguous`.
 */
export function parsePax(data: Uint8Array): Map<string, string> {
  const out = new Map<string, string>();
  let off = 0;
  while (off < data.length) {
    if (data[off] === 0) {
      for (let i = off; i < data.length; i++) {
        if (data[i] !== 0) throw ambiguous("pax header has bytes after a NUL (tar skips them)");
      }
      break;
    }
    let i = off;
    let len = 0;
    while (i < data.length && data[i] >= 0x30 && data[i] <= 0x39) {
      len = len * 10 + (data[i] - 0x30);
      i++;
      if (len > data.length) throw ambiguous("pax record is longer than its header");
    }
    if (i === off) throw ambiguous("pax record does not start with its length");
    if (data[i] !== 0x20 || data[i + 1] === 0x20 || data[i + 1] === 0x09) {
      throw ambiguous("pax record without exactly one space after its length");
    }
    const end = off + len;
    if (end > data.length) throw ambiguous("pax record is longer than its header");
    if (end <= i + 2 || data[end - 1] !== 0x0a) {
      throw ambiguous("pax record does not end in a newline where its length says");
    }
    const kStart = i + 1;
    let eq = kStart;
    while (eq < end - 1 && data[eq] !== 0x3d) {
      if (data[eq] <= 0x20 || data[eq] === 0x7f) {
        throw ambiguous("pax keyword contains a blank or a control character");
      }
      eq++;
    }
    if (eq === kStart || eq >= end - 1) throw ambiguous("pax record without a keyword and '='");
    const key = bytesToLatin1(data.subarray(kStart, eq));
    if (out.has(key)) throw ambiguous(`pax keyword ${shownName(key)} given twice`);
    out.set(key, bytesToLatin1(data.subarray(eq + 1, end - 1)));
    off = end;
  }
  return out;
}

/** Splits a member name into components, refusing absolute paths and `..`. */
export function normalise(raw: string, what = "path"): string {
  if (raw.includes("\0")) {
    // GNU tar would cut the name at the NUL: the name checked here would not be the one used.
    throw new RootfsError("bad_header", `${what} contains a NUL byte`, display(raw));
  }
  if (raw === "") throw ambiguous(`empty ${what}`);
  if (raw.startsWith("/")) {
    throw new RootfsError("absolute_path", `absolute ${what} "${shownName(raw)}"`, display(raw));
  }
  const parts: string[] = [];
  for (const p of raw.split("/")) {
    if (p === "" || p === ".") continue;
    if (p === "..") {
      throw new RootfsError("dotdot", `${what} "${shownName(raw)}" contains ".."`, display(raw));
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
  /** A refusal found in an extended header, raised at the header it describes. */
  #deferred: RootfsError | undefined;
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
    if (this.#deferred) throw this.#deferred;
    if (this.#mode === "header" && this.#headFill === 0 && this.#pending.length === 0) {
      // EOF without an end-of-archive marker between members: GNU tar accepts it; so do we.
      this.#forward(new Uint8Array(2 * BLOCK));
      this.#mode = "end";
      return;
    }
    throw new RootfsError("truncated_tar", "the tar stream ends inside an entry");
  }

  #header(h: Uint8Array): void {
    if (this.#deferred) {
      const err = this.#deferred;
      const type = String.fromCharCode(h[156]);
      if (isZeroBlock(h) || "LKxXg".includes(type)) throw err;
      const entry = display(this.#longName ?? headerName(h));
      throw new RootfsError(err.code.slice("rootfs.".length), err.message, entry, err.hint);
    }
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

    let raw = headerName(h);
    if (this.#longName !== undefined) raw = this.#longName;
    let rawLink = cstring(h, 157, 100);
    if (this.#longLink !== undefined) rawLink = this.#longLink;
    const num = (off: number, len: number, what: string) => {
      try {
        return parseNumber(h, off, len, what);
      } catch (err) {
        if (!(err instanceof RootfsError)) throw err;
        throw new RootfsError(err.code.slice("rootfs.".length), err.message, display(raw));
      }
    };
    if (type === "1" && size !== 0) {
      // GNU tar reads a hardlink's size field as 0 and would take its "data" for headers.
      throw ambiguous("hardlink header with a non-zero size field", display(raw));
    }
    const mode = num(100, 8, "mode") & 0o7777;
    let uid = num(108, 8, "uid");
    let gid = num(116, 8, "gid");
    let mtime = num(136, 12, "mtime");
    const pax = this.#pax;
    if (pax) {
      const p = pax.get("path");
      if (p !== undefined) raw = p;
      const l = pax.get("linkpath");
      if (l !== undefined) rawLink = l;
      const s = pax.get("size");
      if (s !== undefined) {
        if (!/^[0-9]+$/.test(s) || Number(s) > Number.MAX_SAFE_INTEGER) {
          throw new RootfsError("bad_header", `bad pax size "${shownName(s)}"`, display(raw));
        }
        size = Number(s);
      }
      uid = paxId(pax, "uid", uid, raw);
      gid = paxId(pax, "gid", gid, raw);
      for (const key of ["atime", "ctime", "mtime"]) {
        const t = pax.get(key);
        if (t === undefined) continue;
        if (!/^[0-9]{1,15}(\.[0-9]{1,9})?$/.test(t)) {
          throw ambiguous(`pax ${key} "${shownName(t)}" is not a plain time`, display(raw));
        }
        if (key === "mtime") mtime = Math.floor(Number(t));
      }
    }
    if (uid > MAX_ID || gid > MAX_ID) throw ambiguous("uid or gid out of range", display(raw));
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
          `unsupported entry type '${printable(type)}'`,
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
          `hardlink to "${shownName(rawLink)}" points outside the archive`,
          shown,
        );
      }
      linkpath = normalise(rawLink, "hardlink target");
      this.#checkNotThroughSymlink(linkpath, shown, false);
      if (!this.#nonDirs.has(linkpath)) {
        throw new RootfsError(
          "hardlink_escape",
          `hardlink to "${shownName(rawLink)}", which is not an earlier file of the archive`,
          shown,
        );
      }
    } else if (kind === "symlink") {
      if (rawLink.includes("\0")) {
        throw new RootfsError("bad_header", "symlink target contains a NUL byte", shown);
      }
      linkpath = rawLink;
    }

    const entry: TarEntry = { path, kind, size, linkpath, mode, uid, gid, mtime };
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
          `would be written through the symlink "${shownName(parent)}"`,
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
      case "K":
      case "x":
      case "X":
        try {
          if (this.#metaType === "L") this.#longName = longName(data, "long name");
          else if (this.#metaType === "K") this.#longLink = longName(data, "long link target");
          else {
            this.#pax = parsePax(data);
            this.#checkPaxKeys(this.#pax, false);
          }
        } catch (err) {
          // Refused once the header it belongs to is read, so the message can name the entry.
          if (!(err instanceof RootfsError)) throw err;
          this.#deferred = err;
        }
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
      if (key.startsWith("GNU.")) {
        throw new RootfsError(
          "unsupported_type",
          `pax key ${shownName(key)} (sparse, incremental or multi-volume)`,
        );
      }
      // A global header applies to every later entry; only what changes no entry may pass.
      if (global && tarKnowsKeyword(key) && key !== "comment" && key !== "charset") {
        throw new RootfsError("bad_header", `global pax header sets "${shownName(key)}"`);
      }
    }
  }
}

/** The name in a header block: "ustar\0" (POSIX) joins the prefix field; GNU's "ustar " does not. */
function headerName(h: Uint8Array): string {
  const posix = h[257] === 0x75 && h[258] === 0x73 && h[259] === 0x74 && h[260] === 0x61 &&
    h[261] === 0x72 && h[262] === 0;
  const name = cstring(h, 0, 100);
  return posix && h[345] !== 0 ? cstring(h, 345, 155) + "/" + name : name;
}

/**
 * A GNU long name or link: tar reads it as a C string from the data *and its
 * padding*, so a name without a NUL inside the declared size would run on
 * into bytes the size does not cover.
 */
function longName(data: Uint8Array, what: string): string {
  const nul = data.indexOf(0);
  if (nul < 0) throw ambiguous(`GNU ${what} without a terminating NUL`);
  return bytesToLatin1(data.subarray(0, nul));
}

function paxId(pax: Map<string, string>, key: string, fallback: number, raw: string): number {
  const v = pax.get(key);
  if (v === undefined) return fallback;
  if (!/^[0-9]{1,10}$/.test(v) || Number(v) > MAX_ID) {
    throw ambiguous(`pax ${key} "${shownName(v)}" is not a plain number`, display(raw));
  }
  return Number(v);
}

/** For messages about names that came from an archive. */
export function displayName(latinName: string): string {
  return display(latinName);
}
