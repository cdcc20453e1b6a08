/**
 * A tiny DER walk over an X.509 certificate: enough to tell a fly-vault
 * identity CA from anything else without loading an X.509 library (which
 * costs ~300 ms; a pinned reconnect must stay fast).
 *
 * @module
 */
import { BOOTSTRAP_CA_CERT_PEM } from "./bootstrap.ts";
import { pemToDer } from "./pem.ts";

interface Tlv {
  tag: number;
  /** Start of the whole element (tag byte). */
  at: number;
  /** Start of the contents. */
  start: number;
  /** End of the contents (exclusive). */
  end: number;
}

/** One TLV at `at`, which must end by `limit`; throws on anything malformed. */
function tlv(der: Uint8Array, at: number, limit: number): Tlv {
  if (at + 2 > limit) throw new Error("truncated");
  const tag = der[at];
  if ((tag & 0x1f) === 0x1f) throw new Error("multi-byte tags are not used in certificates");
  let len = der[at + 1];
  let start = at + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 3) throw new Error("indefinite or oversized length");
    if (start + n > limit) throw new Error("truncated length");
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + der[start + i];
    start += n;
    if (len < 0x80 || (n > 1 && der[start - n] === 0)) throw new Error("non-minimal length");
  }
  const end = start + len;
  if (end > limit) throw new Error("element overruns its container");
  return { tag, at, start, end };
}

/** The children of a constructed element. */
function children(der: Uint8Array, parent: Tlv): Tlv[] {
  const out: Tlv[] = [];
  for (let at = parent.start; at < parent.end;) {
    const t = tlv(der, at, parent.end);
    out.push(t);
    at = t.end;
  }
  return out;
}

const SEQUENCE = 0x30;
const BASIC_CONSTRAINTS_OID = [0x55, 0x1d, 0x13]; // 2.5.29.19

function bytesOf(der: Uint8Array, t: Tlv): Uint8Array {
  return der.subarray(t.at, t.end);
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** The parts of a certificate we look at. */
interface CertParts {
  issuer: Uint8Array;
  subject: Uint8Array;
  isCa: boolean;
}

function parseCert(der: Uint8Array): CertParts {
  const cert = tlv(der, 0, der.length);
  if (cert.tag !== SEQUENCE || cert.end !== der.length) throw new Error("not one DER SEQUENCE");
  const [tbs, sigAlg, sig] = children(der, cert);
  if (!tbs || tbs.tag !== SEQUENCE || sigAlg?.tag !== SEQUENCE || sig?.tag !== 0x03) {
    throw new Error("not a certificate");
  }
  const fields = children(der, tbs);
  let i = fields[0]?.tag === 0xa0 ? 1 : 0; // [0] version
  const [serial, alg, issuer, validity, subject, spki] = fields.slice(i, i + 6);
  if (
    serial?.tag !== 0x02 || alg?.tag !== SEQUENCE || issuer?.tag !== SEQUENCE ||
    validity?.tag !== SEQUENCE || subject?.tag !== SEQUENCE || spki?.tag !== SEQUENCE
  ) throw new Error("not a certificate body");
  i += 6;
  let isCa = false;
  const ext = fields.slice(i).find((f) => f.tag === 0xa3); // [3] extensions
  if (ext) {
    const [list] = children(der, ext);
    if (list?.tag !== SEQUENCE) throw new Error("bad extensions");
    for (const e of children(der, list)) {
      const parts = children(der, e);
      const oid = parts[0];
      if (
        oid?.tag !== 0x06 ||
        !equal(der.subarray(oid.start, oid.end), new Uint8Array(BASIC_CONSTRAINTS_OID))
      ) {
        continue;
      }
      const value = parts.at(-1)!;
      if (value.tag !== 0x04) throw new Error("bad basicConstraints");
      const seq = tlv(der, value.start, value.end);
      if (seq.tag !== SEQUENCE || seq.end !== value.end) throw new Error("bad basicConstraints");
      const first = children(der, seq)[0];
      isCa = first?.tag === 0x01 && first.end - first.start === 1 && der[first.start] === 0xff;
    }
  }
  return { issuer: bytesOf(der, issuer), subject: bytesOf(der, subject), isCa };
}

let bootstrap: { der: Uint8Array; subject: Uint8Array } | undefined;
function bootstrapParts() {
  if (!bootstrap) {
    const der = pemToDer(BOOTSTRAP_CA_CERT_PEM);
    bootstrap = { der, subject: parseCert(der).subject };
  }
  return bootstrap;
}

/**
 * Why `der` cannot be a pinned fly-vault identity, or undefined when it can:
 * it must be a well-formed CA certificate issued by (named under) the public
 * bootstrap CA, and never the bootstrap CA itself — pinning that would let
 * anyone through, since its key is public. The signature is not checked: the
 * bootstrap key is public, so a signature would prove nothing more.
 */
export function identityDerProblem(der: Uint8Array): string | undefined {
  const boot = bootstrapParts();
  if (equal(der, boot.der)) return "it is the public bootstrap CA, which vouches for anyone";
  let parts: CertParts;
  try {
    parts = parseCert(der);
  } catch (err) {
    return `it is not a DER certificate (${(err as Error).message})`;
  }
  if (equal(parts.subject, boot.subject)) return "it claims to be the bootstrap CA";
  if (!equal(parts.issuer, boot.subject)) return "it is not issued by the bootstrap CA";
  if (!parts.isCa) return "it is not a CA certificate";
  return undefined;
}
