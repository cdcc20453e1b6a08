/**
 * Test helpers: client Initial datagrams of any shape (SNI, ClientHello size,
 * split over packets, coalesced or not), built with the same RFC 9001 keys a
 * real client uses.
 *
 * @module
 */
import { concat, encodeVarint, initialKeys, protectInitial } from "./initial.ts";

/** A minimal TLS 1.3 ClientHello with `sni` (when given), ALPN, and `pad` bytes of padding ext. */
export function clientHello(opts: { sni?: string; alpn?: string[]; pad?: number }): Uint8Array {
  const enc = new TextEncoder();
  const u16 = (n: number) => new Uint8Array([n >> 8, n & 0xff]);
  const ext = (type: number, body: Uint8Array) => concat([u16(type), u16(body.length), body]);
  const exts: Uint8Array[] = [];
  if (opts.sni !== undefined) {
    const name = enc.encode(opts.sni);
    const entry = concat([new Uint8Array([0]), u16(name.length), name]);
    exts.push(ext(0, concat([u16(entry.length), entry])));
  }
  const alpn = (opts.alpn ?? ["fly-vault/1"]).map((a) => {
    const b = enc.encode(a);
    return concat([new Uint8Array([b.length]), b]);
  });
  const alpnList = concat(alpn);
  exts.push(ext(16, concat([u16(alpnList.length), alpnList])));
  exts.push(ext(43, new Uint8Array([2, 3, 4]))); // supported_versions: TLS 1.3
  if (opts.pad) exts.push(ext(21, new Uint8Array(opts.pad)));
  const extBytes = concat(exts);
  const body = concat([
    new Uint8Array([3, 3]),
    crypto.getRandomValues(new Uint8Array(32)),
    new Uint8Array([0]),
    u16(2),
    new Uint8Array([0x13, 0x01]),
    new Uint8Array([1, 0]),
    u16(extBytes.length),
    extBytes,
  ]);
  return concat([
    new Uint8Array([1, body.length >> 16, (body.length >> 8) & 0xff, body.length & 0xff]),
    body,
  ]);
}

/**
 * Client Initial datagrams carrying `hello`, `chunk` CRYPTO bytes per packet;
 * `coalesce` packs all packets into one datagram. Every datagram is padded to
 * 1200 bytes, as RFC 9000 §14.1 requires of a client.
 */
export function clientInitials(hello: Uint8Array, opts: {
  dcid?: Uint8Array;
  scid?: Uint8Array;
  chunk?: number;
  coalesce?: boolean;
} = {}): Uint8Array[] {
  const dcid = opts.dcid ?? crypto.getRandomValues(new Uint8Array(8));
  const scid = opts.scid ?? crypto.getRandomValues(new Uint8Array(8));
  const keys = initialKeys(dcid, "client");
  const chunk = opts.chunk ?? 1000;
  const frames: Uint8Array[] = [];
  for (let off = 0; off < hello.length; off += chunk) {
    const data = hello.subarray(off, Math.min(hello.length, off + chunk));
    frames.push(concat([
      new Uint8Array([0x06]),
      encodeVarint(off),
      encodeVarint(data.length),
      data,
    ]));
  }
  const overhead = 1 + 4 + 1 + dcid.length + 1 + scid.length + 1 + 2 + 4 + 16;
  if (opts.coalesce) {
    const packets = frames.map((f, i) => {
      const last = i === frames.length - 1;
      const used = frames.slice(0, -1).reduce((n, g) => n + g.length + overhead, 0);
      const pad = last ? Math.max(0, 1200 - used - overhead - f.length) : 0;
      return protectInitial({
        keys,
        dcid,
        scid,
        packetNumber: i,
        payload: concat([f, new Uint8Array(pad)]),
      });
    });
    return [concat(packets)];
  }
  return frames.map((f, i) =>
    protectInitial({
      keys,
      dcid,
      scid,
      packetNumber: i,
      payload: concat([f, new Uint8Array(Math.max(0, 1200 - overhead - f.length))]),
    })
  );
}
