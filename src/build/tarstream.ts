/**
 * A pull-based tar reader that hands out each entry's *raw* header blocks
 * (pax/GNU long-name blocks included) and streams its data, so layers can
 * be merged by copying entries verbatim: whatever the image's tar writer
 * recorded (pax xattrs, numeric owners, sub-second mtimes) survives.
 *
 * @module
 */
import { VaultError } from "../errors/mod.ts";
import { checksumOk, cstring, isZeroBlock, parseNumber, parsePax } from "../rootfs/mod.ts";

const BLOCK = 512;

/** One entry of a tar stream. */
export interface RawEntry {
  /** Path with leading "./" and "/" and trailing "/" removed. */
  path: string;
  /** Type flag ('0', '5', '2', …; '\0' is reported as '0'). */
  type: string;
  linkpath: string;
  /** Data size (unpadded). */
  size: number;
  /** The header block and every extended-header block before it, verbatim. */
  header: Uint8Array[];
}

/** Normalises a member name for comparisons (not for extraction). */
export function cleanPath(p: string): string {
  return p.replace(/^(\.\/|\/)+/, "").replace(/\/+$/, "").replace(/\/\.\//g, "/").replace(
    /\/+/g,
    "/",
  ).replace(/^\.$/, "");
}

/** Reads tar entries from a byte stream. */
export class TarReader {
  #reader: ReadableStreamDefaultReader<Uint8Array>;
  #buf: Uint8Array[] = [];
  #buffered = 0;
  #eof = false;
  #pendingData = 0;
  #pos = 0;

  constructor(stream: ReadableStream<Uint8Array>) {
    this.#reader = stream.getReader();
  }

  async #fill(n: number): Promise<boolean> {
    while (this.#buffered < n) {
      if (this.#eof) return false;
      const r = await this.#reader.read();
      if (r.done) {
        this.#eof = true;
        return this.#buffered >= n;
      }
      this.#buf.push(r.value);
      this.#buffered += r.value.length;
    }
    return true;
  }

  #take(n: number): Uint8Array {
    const out = new Uint8Array(n);
    let off = 0;
    while (off < n) {
      const c = this.#buf[0];
      const k = Math.min(c.length, n - off);
      out.set(c.subarray(0, k), off);
      off += k;
      if (k === c.length) this.#buf.shift();
      else this.#buf[0] = c.subarray(k);
    }
    this.#buffered -= n;
    this.#pos += n;
    return out;
  }

  /** Bytes consumed so far: right after {@link next}, the offset of the entry's data. */
  get position(): number {
    return this.#pos;
  }

  /** Takes up to `max` bytes (≥ 1) that are already buffered or arrive next. */
  async #takeSome(max: number): Promise<Uint8Array | null> {
    if (this.#buffered === 0 && !await this.#fill(1)) return null;
    const c = this.#buf[0];
    if (c.length <= max) {
      this.#buf.shift();
      this.#buffered -= c.length;
      this.#pos += c.length;
      return c;
    }
    this.#buf[0] = c.subarray(max);
    this.#buffered -= max;
    this.#pos += max;
    return c.subarray(0, max);
  }

  /** The next entry, or null at the end of the archive. Skips unread data first. */
  async next(): Promise<RawEntry | null> {
    if (this.#pendingData > 0) await this.skip();
    const header: Uint8Array[] = [];
    let longName: string | undefined;
    let longLink: string | undefined;
    let pax: Map<string, string> | undefined;
    for (;;) {
      if (!await this.#fill(BLOCK)) {
        if (this.#buffered === 0 && header.length === 0) return null;
        throw new VaultError("build.bad_layer", "a layer's tar stream ends inside an entry");
      }
      const h = this.#take(BLOCK);
      if (isZeroBlock(h)) {
        if (header.length) throw new VaultError("build.bad_layer", "dangling extended header");
        return null;
      }
      if (!checksumOk(h)) throw new VaultError("build.bad_layer", "tar header checksum mismatch");
      header.push(h);
      const type = h[156] === 0 ? "0" : String.fromCharCode(h[156]);
      let size = parseNumber(h, 124, 12, "size");
      if (type === "L" || type === "K" || type === "x" || type === "X" || type === "g") {
        if (size > 1 << 20) throw new VaultError("build.bad_layer", "extended header too large");
        const padded = Math.ceil(size / BLOCK) * BLOCK;
        if (!await this.#fill(padded)) {
          throw new VaultError("build.bad_layer", "a layer's tar stream ends inside a header");
        }
        const data = this.#take(padded);
        header.push(data);
        const body = data.subarray(0, size);
        if (type === "L") longName = cstring(body, 0, body.length);
        else if (type === "K") longLink = cstring(body, 0, body.length);
        else if (type === "x" || type === "X") pax = parsePax(body);
        continue;
      }
      const posix = h[257] === 0x75 && h[258] === 0x73 && h[259] === 0x74 && h[260] === 0x61 &&
        h[261] === 0x72 && h[262] === 0;
      let name = cstring(h, 0, 100);
      if (posix && h[345] !== 0) name = cstring(h, 345, 155) + "/" + name;
      if (longName !== undefined) name = longName;
      let link = cstring(h, 157, 100);
      if (longLink !== undefined) link = longLink;
      if (pax?.has("path")) name = pax.get("path")!;
      if (pax?.has("linkpath")) link = pax.get("linkpath")!;
      if (pax?.has("size")) size = Number(pax.get("size"));
      const dirByName = type === "0" && name.endsWith("/");
      this.#pendingData = Math.ceil(size / BLOCK) * BLOCK;
      return {
        path: cleanPath(name),
        type: dirByName ? "5" : type,
        linkpath: link,
        size,
        header,
      };
    }
  }

  /** Streams the current entry's data, padding included (what a tar writer copies). */
  async *data(): AsyncGenerator<Uint8Array> {
    while (this.#pendingData > 0) {
      const c = await this.#takeSome(Math.min(this.#pendingData, 1 << 20));
      if (!c) throw new VaultError("build.bad_layer", "a layer's tar stream ends inside a file");
      this.#pendingData -= c.length;
      yield c;
    }
  }

  /** Skips the current entry's data. */
  async skip(): Promise<void> {
    for await (const _ of this.data()) { /* discard */ }
  }

  /** Stops reading. */
  async cancel(): Promise<void> {
    await this.#reader.cancel().catch(() => {});
  }
}
