/**
 * The wire between vault-proxy processes in front of the same machines
 * (issue 11.4). Fly's anycast may deliver a client's packets to different
 * proxy machines; only the proxy that routed the client's Initial holds its
 * session (the upstream socket the machine knows as the client's address).
 * So each proxy tells its peers which client addresses and machine
 * connection IDs it holds ("open"/"close"), and a peer that receives a
 * packet for one of them forwards it, with the client's address, to the
 * holder ("packet"), which relays it upstream and answers the client itself.
 *
 * Every message carries a timestamp and an HMAC-SHA256 (truncated to 16
 * bytes) under a secret the peers share: a stranger can neither claim a
 * client nor inject packets as a peer, and a recorded message is refused
 * after {@link MAX_AGE_MS}. Within that window a recorded "open" or "close"
 * replayed behind a newer one for the same client is ignored (the receiver
 * keeps the sender's time of the one it applied); a replayed "packet" is a
 * duplicate QUIC packet, which the machine discards.
 *
 * Layout: "VPR1" | op u8 | sender id (8) | time ms u64 | mac (16) | body.
 * Bodies: packet = addr | datagram; open = addr | n u8 | n × (len u8 | cid);
 * close = addr; addr = len u8 | host (ASCII) | port u16.
 *
 * @module
 */
import { createHmac, timingSafeEqual } from "node:crypto";

const MAGIC = [0x56, 0x50, 0x52, 0x31]; // "VPR1"
const HEAD = 4 + 1 + 8 + 8 + 16;
/** A peer message older (or newer) than this is refused: a replay, or a skewed clock. */
export const MAX_AGE_MS = 10_000;

/** What one peer tells another. */
export type PeerMessage =
  | { op: "packet"; host: string; port: number; data: Uint8Array }
  | { op: "open"; host: string; port: number; cids: Uint8Array[] }
  | { op: "close"; host: string; port: number };

const OPS = { packet: 1, open: 2, close: 3 } as const;

function mac(secret: Uint8Array, buf: Uint8Array): Uint8Array {
  const h = createHmac("sha256", secret);
  h.update(buf.subarray(0, 21));
  h.update(buf.subarray(HEAD));
  return new Uint8Array(h.digest().buffer, 0, 16);
}

/** Encodes and signs a message from `sender` (8 bytes). */
export function encodePeer(
  m: PeerMessage,
  sender: Uint8Array,
  secret: Uint8Array,
  now = Date.now(),
): Uint8Array {
  const host = new TextEncoder().encode(m.host);
  if (host.length > 255) throw new RangeError("host too long");
  let bodyLen = 1 + host.length + 2;
  if (m.op === "packet") bodyLen += m.data.length;
  if (m.op === "open") bodyLen += 1 + m.cids.reduce((n, c) => n + 1 + c.length, 0);
  const buf = new Uint8Array(HEAD + bodyLen);
  buf.set(MAGIC, 0);
  buf[4] = OPS[m.op];
  buf.set(sender.subarray(0, 8), 5);
  new DataView(buf.buffer).setBigUint64(13, BigInt(now));
  let p = HEAD;
  buf[p++] = host.length;
  buf.set(host, p);
  p += host.length;
  buf[p++] = m.port >> 8;
  buf[p++] = m.port & 0xff;
  if (m.op === "packet") buf.set(m.data, p);
  if (m.op === "open") {
    buf[p++] = m.cids.length;
    for (const c of m.cids) {
      buf[p++] = c.length;
      buf.set(c, p);
      p += c.length;
    }
  }
  buf.set(mac(secret, buf), 21);
  return buf;
}

/** Checks and decodes a message; undefined for anything not a fresh, signed peer message. */
export function decodePeer(
  buf: Uint8Array,
  secret: Uint8Array,
  now = Date.now(),
): { sender: string; at: number; message: PeerMessage } | undefined {
  if (buf.length < HEAD + 3) return undefined;
  for (let i = 0; i < 4; i++) if (buf[i] !== MAGIC[i]) return undefined;
  const want = mac(secret, buf);
  if (!timingSafeEqual(want, buf.subarray(21, 37))) return undefined;
  const at = Number(new DataView(buf.buffer, buf.byteOffset).getBigUint64(13));
  if (Math.abs(now - at) > MAX_AGE_MS) return undefined;
  const sender = Array.from(buf.subarray(5, 13), (b) => b.toString(16).padStart(2, "0")).join("");
  let p = HEAD;
  const hl = buf[p++];
  if (p + hl + 2 > buf.length) return undefined;
  const host = new TextDecoder().decode(buf.subarray(p, p + hl));
  p += hl;
  const port = (buf[p] << 8) | buf[p + 1];
  p += 2;
  switch (buf[4]) {
    case 1:
      return { sender, at, message: { op: "packet", host, port, data: buf.subarray(p) } };
    case 2: {
      if (p >= buf.length) return undefined;
      const n = buf[p++];
      const cids: Uint8Array[] = [];
      for (let i = 0; i < n; i++) {
        if (p >= buf.length) return undefined;
        const l = buf[p++];
        if (l === 0 || l > 20 || p + l > buf.length) return undefined;
        cids.push(buf.subarray(p, p + l));
        p += l;
      }
      return { sender, at, message: { op: "open", host, port, cids } };
    }
    case 3:
      return { sender, at, message: { op: "close", host, port } };
    default:
      return undefined;
  }
}
