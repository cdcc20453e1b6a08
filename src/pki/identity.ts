/**
 * Per-boot machine identity (DESIGN §4): an identity CA `I` issued by the
 * public bootstrap CA, and a TLS leaf `L` issued by `I`. Keys live only in
 * memory; a restart makes a new identity, which is what makes a stale pin
 * fail and sends the client back to attestation.
 *
 * @module
 */
import type * as X509 from "@peculiar/x509";
import { BOOTSTRAP_CA_CERT_PEM, BOOTSTRAP_CA_KEY_PEM } from "./bootstrap.ts";
import { derToPem, pemToDer } from "./pem.ts";

// @peculiar/x509 takes ~300 ms to load under Deno; a pinned reconnect never needs it.
let x509Module: Promise<typeof X509> | undefined;
function loadX509(): Promise<typeof X509> {
  return x509Module ??= import("reflect-metadata").then(() => import("@peculiar/x509"));
}

const EC = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" } as const;

/** The domain under which a machine's TLS name lives; `.internal` can never get a public certificate. */
export const VAULT_DOMAIN = "vault.internal";

/** The TLS server name for a machine: `<machine_id>.vault.internal`, or `vault.internal`. */
export function serverNameFor(machineId?: string): string {
  return machineId ? `${machineId}.${VAULT_DOMAIN}` : VAULT_DOMAIN;
}

/** Everything a server needs to serve, and the identity it attests. */
export interface MachineIdentity {
  /** Identity CA certificate, DER: what the attestation binds and the client pins. */
  identityDer: Uint8Array<ArrayBuffer>;
  /** Identity CA certificate, PEM. */
  identityPem: string;
  /** TLS certificate chain `[L, I]`, PEM. */
  chainPem: string;
  /** TLS leaf private key, PKCS#8 PEM. */
  leafKeyPem: string;
  /** `fly-vault:v1:<base64url(sha256(SPKI of I))>`. */
  audience: string;
}

function base64url(bytes: Uint8Array): string {
  return btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(
    /=+$/,
    "",
  );
}

let bootstrap: Promise<{ cert: X509.X509Certificate; key: CryptoKey }> | undefined;

function loadBootstrap() {
  return bootstrap ??= (async () => ({
    cert: new (await loadX509()).X509Certificate(BOOTSTRAP_CA_CERT_PEM),
    key: await crypto.subtle.importKey("pkcs8", pemToDer(BOOTSTRAP_CA_KEY_PEM), EC, false, [
      "sign",
    ]),
  }))();
}

/** base64url(sha256(SubjectPublicKeyInfo)) of a DER certificate. */
export async function spkiSha256(certDer: Uint8Array): Promise<string> {
  const x509 = await loadX509();
  const spki = new x509.X509Certificate(new Uint8Array(certDer)).publicKey.rawData;
  return base64url(new Uint8Array(await crypto.subtle.digest("SHA-256", spki)));
}

/** The OIDC `aud` that binds an attestation to an identity CA certificate. */
export async function attestationAudience(identityDer: Uint8Array): Promise<string> {
  return `fly-vault:v1:${await spkiSha256(identityDer)}`;
}

/** Checks that `der` parses as a CA certificate issued by the bootstrap CA. Returns its PEM. */
export async function identityPemFromDer(der: Uint8Array): Promise<string> {
  const x509 = await loadX509();
  const cert = new x509.X509Certificate(new Uint8Array(der));
  const { cert: boot } = await loadBootstrap();
  const ok = await cert.verify({ publicKey: boot.publicKey, signatureOnly: true });
  if (!ok) throw new Error("identity certificate is not issued by the bootstrap CA");
  return derToPem(der, "CERTIFICATE");
}

function randomSerial(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[0] &= 0x7f;
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Makes a fresh identity for this boot. `machineId` goes into the leaf's
 * SANs so a client dialling `<machine_id>.vault.internal` (through the
 * proxy, which routes by that name) accepts it.
 */
export async function createMachineIdentity(
  opts: { machineId?: string; issuer?: { certPem: string; keyPem: string } } = {},
): Promise<MachineIdentity> {
  const x509 = await loadX509();
  const boot = opts.issuer
    ? {
      cert: new x509.X509Certificate(opts.issuer.certPem),
      key: await crypto.subtle.importKey("pkcs8", pemToDer(opts.issuer.keyPem), EC, false, [
        "sign",
      ]),
    }
    : await loadBootstrap();
  const now = Date.now();
  const notBefore = new Date(now - 3600_000);
  const notAfter = new Date(now + 10 * 365 * 86400_000);
  const idKeys = await crypto.subtle.generateKey(EC, true, ["sign", "verify"]) as CryptoKeyPair;
  const identity = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerial(),
    subject: `CN=fly-vault machine identity ${opts.machineId ?? ""}`.trim(),
    issuer: boot.cert.subject,
    notBefore,
    notAfter,
    publicKey: idKeys.publicKey,
    signingKey: boot.key,
    signingAlgorithm: EC,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true),
      await x509.SubjectKeyIdentifierExtension.create(idKeys.publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(boot.cert),
    ],
  });
  const leafKeys = await crypto.subtle.generateKey(EC, true, ["sign", "verify"]) as CryptoKeyPair;
  const names = [{ type: "dns" as const, value: VAULT_DOMAIN }];
  if (opts.machineId) names.push({ type: "dns", value: serverNameFor(opts.machineId) });
  const leaf = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerial(),
    subject: `CN=${serverNameFor(opts.machineId)}`,
    issuer: identity.subject,
    notBefore,
    notAfter,
    publicKey: leafKeys.publicKey,
    signingKey: idKeys.privateKey,
    signingAlgorithm: EC,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension(names),
      await x509.AuthorityKeyIdentifierExtension.create(identity),
    ],
  });
  const identityDer = new Uint8Array(identity.rawData);
  const leafKeyDer = await crypto.subtle.exportKey("pkcs8", leafKeys.privateKey);
  return {
    identityDer,
    identityPem: identity.toString("pem") + "\n",
    chainPem: leaf.toString("pem") + "\n" + identity.toString("pem") + "\n",
    leafKeyPem: derToPem(new Uint8Array(leafKeyDer), "PRIVATE KEY"),
    audience: await attestationAudience(identityDer),
  };
}
