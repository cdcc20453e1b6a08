/**
 * QUIC v1 Initial packets, read and written without terminating TLS: the
 * proxy derives the Initial keys from the client's Destination Connection ID
 * (RFC 9001 §5.2), removes header protection, decrypts, gathers the CRYPTO
 * frames into the TLS ClientHello and reads its SNI. It can also write a
 * server Initial carrying CONNECTION_CLOSE, so a client it cannot route fails
 * fast instead of timing out.
 *
 * Everything here is a pure function over bytes. Failures are values with a
 * reason, never exceptions, and every buffer is bounded: this code reads
 * whatever the Internet sends to a public UDP port.
 *
 * @module
 */
import { createCipheriv, createDecipheriv, createHmac } from "node:crypto";

/** QUIC version 1 (RFC 9000). */
export const QUIC_V1 = 0x00000001;
const INITIAL_SALT_V1 = hex("38762cf7f55934b34d179ae6a4c80cadccbb7f0a");
/** RFC 9000 §17.2: connection IDs in v1 are at most 20 bytes. */
const MAX_CID = 20;

/** Why a datagram or packet could not be used for routing. Also the metric label. */
export type DropReason =
  | "short" // too few bytes for what the header says
  | "short_header" // a 1-RTT packet from a client with no session
  | "version" // not QUIC v1 (includes version negotiation)
  | "not_initial" // long header but not an Initial (0-RTT/Handshake/Retry first)
  | "header" // malformed long header (fixed bit, CID length, varint)
  | "decrypt" // header protection or AEAD failed
  | "frame" // malformed or forbidden frame in an Initial
  | "tls" // malformed ClientHello
  | "no_sni" // a ClientHello without a server_name
  | "incomplete" // ClientHello not complete yet (wait for more packets)
  | "too_big"; // CRYPTO data beyond what the proxy buffers per client

/** A result: the value, or the reason it could not be had. */
export type Result<T> = { ok: true; value: T } | { ok: false; reason: DropReason };

const fail = <T>(reason: DropReason): Result<T> => ({ ok: false, reason });
const good = <T>(value: T): Result<T> => ({ ok: true, value });

function hex(s: string): Uint8Array {
  const out = new Uint8Array(s.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(s.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** Reads a QUIC variable-length integer (RFC 9000 §16); null when it runs past `end`. */
export function readVarint(
  buf: Uint8Array,
  offset: number,
  end = buf.length,
): { value: number; next: number } | null {
  if (offset >= end) return null;
  const first = buf[offset];
  const len = 1 << (first >> 6);
  if (offset + len > end) return null;
  let value = first & 0x3f;
  for (let i = 1; i < len; i++) value = value * 256 + buf[offset + i];
  // 62-bit values above 2^53 lose precision; nothing the proxy reads is that large legitimately.
  return { value, next: offset + len };
}

/** Encodes a QUIC variable-length integer (values below 2^30). */
export function encodeVarint(value: number): Uint8Array {
  if (value < 0x40) return new Uint8Array([value]);
  if (value < 0x4000) return new Uint8Array([0x40 | (value >> 8), value & 0xff]);
  if (value < 0x40000000) {
    return new Uint8Array([
      0x80 | (value >>> 24),
      (value >> 16) & 0xff,
      (value >> 8) & 0xff,
      value & 0xff,
    ]);
  }
  throw new RangeError("varint too large for this encoder");
}

/** The parts of a long-header packet the proxy needs. Offsets are into the datagram. */
export interface LongHeader {
  /** 0 Initial, 1 0-RTT, 2 Handshake, 3 Retry. */
  type: number;
  version: number;
  dcid: Uint8Array;
  scid: Uint8Array;
  /** Initial only: the token (empty for a first Initial). */
  token: Uint8Array;
  /** Where this packet starts in the datagram. */
  start: number;
  /** Where the (protected) packet number starts. */
  pnOffset: number;
  /** One past the last byte of this packet (the next coalesced packet starts here). */
  end: number;
}

/**
 * Parses the long header of the packet starting at `offset` (RFC 9000 §17.2).
 * A version other than 1 is reported as "version" once the version is read.
 * `greased`: accept a cleared fixed bit (RFC 9287: quinn greases it once the
 * peer allows, so only a client's first Initials are sure to carry it).
 */
export function parseLongHeader(buf: Uint8Array, offset = 0, greased = false): Result<LongHeader> {
  if (buf.length - offset < 7) {
    return fail(buf.length > offset && !(buf[offset] & 0x80) ? "short_header" : "short");
  }
  const b0 = buf[offset];
  if (!(b0 & 0x80)) return fail("short_header");
  const version = ((buf[offset + 1] << 24) | (buf[offset + 2] << 16) | (buf[offset + 3] << 8) |
    buf[offset + 4]) >>> 0;
  if (version !== QUIC_V1) return fail("version");
  if (!(b0 & 0x40) && !greased) return fail("header");
  const type = (b0 >> 4) & 3;
  let p = offset + 5;
  const dcidLen = buf[p++];
  if (dcidLen > MAX_CID) return fail("header");
  if (p + dcidLen + 1 > buf.length) return fail("short");
  const dcid = buf.subarray(p, p + dcidLen);
  p += dcidLen;
  const scidLen = buf[p++];
  if (scidLen > MAX_CID) return fail("header");
  if (p + scidLen > buf.length) return fail("short");
  const scid = buf.subarray(p, p + scidLen);
  p += scidLen;
  let token: Uint8Array = new Uint8Array(0);
  if (type === 3) {
    // Retry has no length: it takes the rest of the datagram.
    return good({
      type,
      version,
      dcid,
      scid,
      token,
      start: offset,
      pnOffset: buf.length,
      end: buf.length,
    });
  }
  if (type === 0) {
    const tl = readVarint(buf, p);
    if (!tl) return fail("short");
    if (tl.next + tl.value > buf.length) return fail("short");
    token = buf.subarray(tl.next, tl.next + tl.value);
    p = tl.next + tl.value;
  }
  const len = readVarint(buf, p);
  if (!len) return fail("short");
  const end = len.next + len.value;
  if (end > buf.length) return fail("short");
  return good({ type, version, dcid, scid, token, start: offset, pnOffset: len.next, end });
}

/** The keys protecting Initial packets in one direction. */
export interface InitialKeys {
  key: Uint8Array;
  iv: Uint8Array;
  hp: Uint8Array;
}

function hmac(key: Uint8Array, data: Uint8Array): Uint8Array {
  return new Uint8Array(createHmac("sha256", key).update(data).digest());
}

/** HKDF-Expand-Label (RFC 8446 §7.1) with an empty context, for lengths ≤ 32. */
function expandLabel(secret: Uint8Array, label: string, length: number): Uint8Array {
  const full = new TextEncoder().encode("tls13 " + label);
  const info = new Uint8Array(2 + 1 + full.length + 1 + 1);
  info[0] = length >> 8;
  info[1] = length & 0xff;
  info[2] = full.length;
  info.set(full, 3);
  info[3 + full.length] = 0; // empty context
  info[4 + full.length] = 1; // HKDF-Expand counter T(1)
  return hmac(secret, info).subarray(0, length);
}

/** Derives the Initial secret of one side (RFC 9001 §5.2). */
export function initialSecret(dcid: Uint8Array, side: "client" | "server"): Uint8Array {
  const initial = hmac(INITIAL_SALT_V1, dcid); // HKDF-Extract
  return expandLabel(initial, side === "client" ? "client in" : "server in", 32);
}

/** Derives the Initial packet protection keys of one side from the client's first DCID. */
export function initialKeys(dcid: Uint8Array, side: "client" | "server"): InitialKeys {
  const secret = initialSecret(dcid, side);
  return {
    key: expandLabel(secret, "quic key", 16),
    iv: expandLabel(secret, "quic iv", 12),
    hp: expandLabel(secret, "quic hp", 16),
  };
}

function headerMask(hp: Uint8Array, sample: Uint8Array): Uint8Array {
  const c = createCipheriv("aes-128-ecb", hp, null);
  c.setAutoPadding(false);
  return new Uint8Array(c.update(sample));
}

function nonce(iv: Uint8Array, pn: number): Uint8Array {
  const n = iv.slice();
  for (let i = 0; i < 4; i++) n[11 - i] ^= (pn >>> (8 * i)) & 0xff;
  return n;
}

/** A decrypted Initial packet. */
export interface InitialPacket {
  header: LongHeader;
  packetNumber: number;
  /** The decrypted frames. */
  payload: Uint8Array;
}

/**
 * Removes header protection from the Initial at `header` and decrypts it
 * with `keys`. The datagram is left untouched (the proxy relays it as is).
 */
export function decryptInitial(
  buf: Uint8Array,
  header: LongHeader,
  keys: InitialKeys,
): Result<InitialPacket> {
  const { pnOffset, end } = header;
  // The sample starts 4 bytes after the packet number's start, whatever its length.
  if (pnOffset + 4 + 16 > end) return fail("short");
  const mask = headerMask(keys.hp, buf.subarray(pnOffset + 4, pnOffset + 20));
  const start = header.start;
  const aadLenMax = pnOffset - start + 4;
  const aad = buf.slice(start, start + aadLenMax);
  aad[0] ^= mask[0] & 0x0f;
  const pnLen = (aad[0] & 0x03) + 1;
  let pn = 0;
  const pnAt = pnOffset - start;
  for (let i = 0; i < pnLen; i++) {
    aad[pnAt + i] ^= mask[1 + i];
    pn = pn * 256 + aad[pnAt + i];
  }
  const header2 = aad.subarray(0, pnAt + pnLen);
  const ctStart = pnOffset + pnLen;
  if (end - ctStart < 16) return fail("short");
  try {
    const d = createDecipheriv("aes-128-gcm", keys.key, nonce(keys.iv, pn));
    d.setAAD(header2);
    d.setAuthTag(buf.subarray(end - 16, end));
    const a = d.update(buf.subarray(ctStart, end - 16));
    const b = d.final();
    const payload = new Uint8Array(a.length + b.length);
    payload.set(a);
    payload.set(b, a.length);
    if (payload.length === 0) return fail("frame"); // RFC 9000 §12.4: a packet has ≥1 frame
    return good({ header, packetNumber: pn, payload });
  } catch {
    return fail("decrypt");
  }
}

/** A CRYPTO frame's data at its offset in the Initial crypto stream. */
export interface CryptoChunk {
  offset: number;
  data: Uint8Array;
}

/** What the frames of one Initial packet carried. */
export interface InitialFrames {
  crypto: CryptoChunk[];
  /** Set when the packet carries CONNECTION_CLOSE (the client gave up). */
  close?: { code: number; reason: string };
}

/**
 * Parses the frames of a decrypted Initial payload. Only the frames RFC 9000
 * §12.4 allows in Initial packets are accepted: PADDING, PING, ACK, CRYPTO,
 * CONNECTION_CLOSE (transport).
 */
export function parseInitialFrames(p: Uint8Array): Result<InitialFrames> {
  const out: InitialFrames = { crypto: [] };
  let i = 0;
  while (i < p.length) {
    const t = p[i];
    if (t === 0x00) {
      i++;
      continue;
    }
    if (t === 0x01) {
      i++;
      continue;
    }
    const v = (at: number) => readVarint(p, at);
    if (t === 0x02 || t === 0x03) {
      let at = i + 1;
      const fields: number[] = [];
      for (let k = 0; k < 4; k++) {
        const r = v(at);
        if (!r) return fail("frame");
        fields.push(r.value);
        at = r.next;
      }
      const ranges = fields[2];
      if (ranges > p.length) return fail("frame");
      for (let k = 0; k < ranges * 2 + (t === 0x03 ? 3 : 0); k++) {
        const r = v(at);
        if (!r) return fail("frame");
        at = r.next;
      }
      i = at;
      continue;
    }
    if (t === 0x06) {
      const off = v(i + 1);
      if (!off) return fail("frame");
      const len = v(off.next);
      if (!len || len.next + len.value > p.length) return fail("frame");
      out.crypto.push({ offset: off.value, data: p.subarray(len.next, len.next + len.value) });
      i = len.next + len.value;
      continue;
    }
    if (t === 0x1c) {
      const code = v(i + 1);
      if (!code) return fail("frame");
      const ft = v(code.next);
      if (!ft) return fail("frame");
      const rl = v(ft.next);
      if (!rl || rl.next + rl.value > p.length) return fail("frame");
      const reason = new TextDecoder().decode(p.subarray(rl.next, rl.next + rl.value));
      out.close = { code: code.value, reason };
      i = rl.next + rl.value;
      continue;
    }
    return fail("frame");
  }
  return good(out);
}

/** Limits on what the proxy keeps per pending (not yet routed) client. */
export interface AssemblyLimits {
  /** Highest crypto-stream byte kept; a ClientHello beyond it is refused. */
  maxBytes: number;
  /** Initial packets accepted before the ClientHello must be complete. */
  maxPackets: number;
}

/**
 * Default: a ClientHello up to 64 KiB over up to 80 Initial packets. Today's ClientHellos are
 * 0.3–2 KiB, but post-quantum hybrid key shares grow them (X25519MLKEM768 adds ~1.2 KiB, an
 * MLKEM1024 hybrid ~1.6 KiB; a client offering several, plus PSK tickets, ECH and certificate
 * authorities, passes 16 KiB). 64 KiB is four times the old 16 KiB bound, and 80 packets carry it
 * in 1000-byte chunks with room for retransmits. A pending client's memory is counted against
 * the proxy's overall pending budget ({@link CryptoAssembler.allocated}), so the larger bound
 * does not let a flood of incomplete ClientHellos grow memory.
 */
export const DEFAULT_ASSEMBLY_LIMITS: AssemblyLimits = { maxBytes: 65_536, maxPackets: 80 };

/** Gathers CRYPTO data by offset until the ClientHello is whole. Bounded by {@link AssemblyLimits}. */
export class CryptoAssembler {
  #buf: Uint8Array;
  #have: Uint8Array;
  #packets = 0;
  #limits: AssemblyLimits;

  constructor(limits: AssemblyLimits = DEFAULT_ASSEMBLY_LIMITS) {
    this.#limits = limits;
    // Grown on demand up to maxBytes: a flood of tiny pending clients must stay tiny.
    this.#buf = new Uint8Array(0);
    this.#have = new Uint8Array(0);
  }

  /** Bytes held (data and the have-map), for the proxy's pending memory budget. */
  get allocated(): number {
    return this.#buf.length + this.#have.length;
  }

  /** Packets added so far. */
  get packets(): number {
    return this.#packets;
  }

  /** Adds one packet's CRYPTO chunks. "too_big" when a limit is crossed. */
  add(chunks: CryptoChunk[]): Result<void> {
    if (++this.#packets > this.#limits.maxPackets) return fail("too_big");
    for (const c of chunks) {
      const end = c.offset + c.data.length;
      if (end > this.#limits.maxBytes) return fail("too_big");
      if (end > this.#buf.length) {
        const size = Math.min(this.#limits.maxBytes, Math.max(end, this.#buf.length * 2, 1024));
        const nb = new Uint8Array(size);
        nb.set(this.#buf);
        const nh = new Uint8Array(size);
        nh.set(this.#have);
        this.#buf = nb;
        this.#have = nh;
      }
      this.#buf.set(c.data, c.offset);
      this.#have.fill(1, c.offset, end);
    }
    return good(undefined);
  }

  /** The contiguous bytes from offset 0. */
  contiguous(): Uint8Array {
    const n = this.#have.indexOf(0);
    return this.#buf.subarray(0, n === -1 ? this.#have.length : n);
  }

  /** The ClientHello's SNI once the whole ClientHello is here; "incomplete" before. */
  sni(): Result<ClientHelloInfo> {
    return parseClientHello(this.contiguous());
  }
}

/** What the proxy reads from a ClientHello. */
export interface ClientHelloInfo {
  sni: string;
  alpn: string[];
}

/**
 * Parses a TLS 1.3 ClientHello handshake message (RFC 8446 §4.1.2) from the
 * start of the Initial crypto stream and returns its server name.
 * "incomplete" when the message is longer than the bytes given.
 */
export function parseClientHello(b: Uint8Array): Result<ClientHelloInfo> {
  if (b.length < 4) return fail("incomplete");
  if (b[0] !== 0x01) return fail("tls");
  const len = (b[1] << 16) | (b[2] << 8) | b[3];
  if (len > 0xffff) return fail("tls"); // no sane ClientHello is this big; avoids waiting forever
  if (b.length < 4 + len) return fail("incomplete");
  const end = 4 + len;
  let p = 4 + 2 + 32; // legacy_version, random
  if (p + 1 > end) return fail("tls");
  p += 1 + b[p]; // legacy_session_id
  if (p + 2 > end) return fail("tls");
  p += 2 + ((b[p] << 8) | b[p + 1]); // cipher_suites
  if (p + 1 > end) return fail("tls");
  p += 1 + b[p]; // legacy_compression_methods
  if (p + 2 > end) return fail("tls");
  const extEnd = p + 2 + ((b[p] << 8) | b[p + 1]);
  if (extEnd > end) return fail("tls");
  p += 2;
  let sni: string | undefined;
  const alpn: string[] = [];
  while (p < extEnd) {
    if (p + 4 > extEnd) return fail("tls");
    const type = (b[p] << 8) | b[p + 1];
    const elen = (b[p + 2] << 8) | b[p + 3];
    const ds = p + 4;
    const de = ds + elen;
    if (de > extEnd) return fail("tls");
    if (type === 0x0000) {
      if (sni !== undefined) return fail("tls"); // duplicate extension
      const r = readServerName(b, ds, de);
      if (!r.ok) return r;
      sni = r.value;
    } else if (type === 0x0010 && de - ds >= 2) {
      const le = ds + 2 + ((b[ds] << 8) | b[ds + 1]);
      if (le > de) return fail("tls");
      for (let q = ds + 2; q < le;) {
        const n = b[q];
        if (q + 1 + n > le) return fail("tls");
        alpn.push(latin1(b.subarray(q + 1, q + 1 + n)));
        q += 1 + n;
      }
    }
    p = de;
  }
  if (sni === undefined) return fail("no_sni");
  return good({ sni, alpn });
}

function latin1(b: Uint8Array): string {
  let s = "";
  for (const c of b) s += String.fromCharCode(c);
  return s;
}

function readServerName(b: Uint8Array, ds: number, de: number): Result<string> {
  if (de - ds < 2) return fail("tls");
  const listEnd = ds + 2 + ((b[ds] << 8) | b[ds + 1]);
  if (listEnd > de) return fail("tls");
  for (let q = ds + 2; q < listEnd;) {
    if (q + 3 > listEnd) return fail("tls");
    const nameType = b[q];
    const n = (b[q + 1] << 8) | b[q + 2];
    if (q + 3 + n > listEnd) return fail("tls");
    if (nameType === 0) {
      const name = b.subarray(q + 3, q + 3 + n);
      // RFC 6066: an ASCII DNS hostname, no trailing dot.
      for (const c of name) if (c < 0x21 || c > 0x7e) return fail("tls");
      if (n === 0) return fail("no_sni");
      return good(latin1(name).toLowerCase());
    }
    q += 3 + n;
  }
  return fail("no_sni");
}

/** One long-header packet found in a datagram. */
export interface DatagramPacket {
  header: LongHeader;
}

/**
 * Splits a datagram into its coalesced long-header packets (RFC 9000 §12.2).
 * A trailing short-header packet or padding ends the walk.
 */
export function splitDatagram(buf: Uint8Array, greased = false): Result<LongHeader[]> {
  const out: LongHeader[] = [];
  let off = 0;
  while (off < buf.length && out.length < 8) {
    if (!(buf[off] & 0x80)) {
      if (out.length === 0) return fail(buf.length < 7 ? "short" : "short_header");
      break; // a 1-RTT packet after the long ones
    }
    const h = parseLongHeader(buf, off, greased);
    if (!h.ok) {
      if (out.length === 0) return h;
      break; // junk after valid packets is ignored (RFC 9000 §12.2 allows padding-like junk)
    }
    // Coalesced packets must share the DCID of the first (RFC 9000 §12.2).
    if (out.length > 0 && !equalBytes(out[0].dcid, h.value.dcid)) break;
    out.push(h.value);
    off = h.value.end;
  }
  return good(out);
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * Reads the client Initials in a datagram: finds the Initial packets (the
 * first must be one), decrypts them with keys derived from `dcid` (the
 * client's original DCID; defaults to the first packet's) and returns their
 * frames in order.
 */
export function readClientInitials(
  buf: Uint8Array,
  dcid?: Uint8Array,
): Result<{ dcid: Uint8Array; scid: Uint8Array; frames: InitialFrames[] }> {
  const split = splitDatagram(buf);
  if (!split.ok) return split;
  const packets = split.value;
  if (packets.length === 0) return fail("short");
  if (packets[0].type !== 0) return fail("not_initial");
  const first = packets[0];
  // RFC 9000 §14.1: a client's Initial datagram is at least 1200 bytes. Anything smaller is
  // refused before any crypto, which also keeps the proxy from amplifying a spoofed source.
  if (buf.length < 1200) return fail("short");
  if (first.dcid.length < 8) return fail("header"); // §7.2: the first DCID is ≥ 8 bytes
  const key = dcid ?? first.dcid;
  const keys = initialKeys(key, "client");
  const frames: InitialFrames[] = [];
  for (const h of packets) {
    if (h.type !== 0) continue; // 0-RTT after the Initial: relayed later, not read
    const d = decryptInitial(buf, h, keys);
    if (!d.ok) return d;
    const f = parseInitialFrames(d.value.payload);
    if (!f.ok) return f;
    frames.push(f.value);
  }
  return good({ dcid: key.slice(), scid: first.scid.slice(), frames });
}

/** QUIC transport error codes (RFC 9000 §20.1) the proxy sends. */
export const TransportError = {
  NO_ERROR: 0x0,
  INTERNAL_ERROR: 0x1,
  CONNECTION_REFUSED: 0x2,
  PROTOCOL_VIOLATION: 0xa,
} as const;

/**
 * Builds a server Initial packet carrying a transport CONNECTION_CLOSE
 * (frame 0x1c, the only close allowed in Initial packets, RFC 9000 §10.2.3),
 * protected with the server Initial keys of `originalDcid`. The packet goes to
 * the client's SCID; its own SCID is `serverCid`.
 */
export function buildInitialClose(opts: {
  originalDcid: Uint8Array;
  clientScid: Uint8Array;
  serverCid: Uint8Array;
  code: number;
  reason: string;
  packetNumber?: number;
}): Uint8Array {
  const reason = new TextEncoder().encode(opts.reason).subarray(0, 512);
  const frame = concat([
    new Uint8Array([0x1c]),
    encodeVarint(opts.code),
    encodeVarint(0), // frame type: none in particular
    encodeVarint(reason.length),
    reason,
  ]);
  return protectInitial({
    keys: initialKeys(opts.originalDcid, "server"),
    dcid: opts.clientScid,
    scid: opts.serverCid,
    packetNumber: opts.packetNumber ?? 0,
    payload: frame,
  });
}

/**
 * Writes one protected Initial packet (4-byte packet number) around `payload`
 * (frames, already padded as the sender wants). Used for the proxy's close and
 * by tests to make client Initials of any shape.
 */
export function protectInitial(opts: {
  keys: InitialKeys;
  dcid: Uint8Array;
  scid: Uint8Array;
  token?: Uint8Array;
  packetNumber: number;
  payload: Uint8Array;
}): Uint8Array {
  const { keys, payload } = opts;
  const pn = opts.packetNumber;
  const token = opts.token ?? new Uint8Array(0);
  const pnLen = 4; // with 4 bytes the sample always exists after ≥ 1 frame byte + tag
  const header = concat([
    new Uint8Array([0xc0 | (pnLen - 1), 0, 0, 0, 1, opts.dcid.length]),
    opts.dcid,
    new Uint8Array([opts.scid.length]),
    opts.scid,
    encodeVarint(token.length),
    token,
    encodeVarint(pnLen + payload.length + 16),
    new Uint8Array([(pn >>> 24) & 0xff, (pn >>> 16) & 0xff, (pn >>> 8) & 0xff, pn & 0xff]),
  ]);
  const c = createCipheriv("aes-128-gcm", keys.key, nonce(keys.iv, pn));
  c.setAAD(header);
  const ct = concat([new Uint8Array(c.update(payload)), new Uint8Array(c.final())]);
  const tag = new Uint8Array(c.getAuthTag());
  const packet = concat([header, ct, tag]);
  const pnOffset = header.length - pnLen;
  const mask = headerMask(keys.hp, packet.subarray(pnOffset + 4, pnOffset + 20));
  packet[0] ^= mask[0] & 0x0f;
  for (let i = 0; i < pnLen; i++) packet[pnOffset + i] ^= mask[1 + i];
  return packet;
}

/** Concatenates byte arrays. */
export function concat(parts: Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** Exposed for tests: hex to bytes. */
export const fromHex: (s: string) => Uint8Array = hex;
