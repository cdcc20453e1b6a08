/**
 * The public bootstrap CA. Its private key is published here on purpose: it
 * authenticates nothing. It exists only because the QUIC client insists on a
 * certificate chain it can verify, and the attest connection needs *some*
 * chain before the Fly-signed token proves which identity CA is genuine
 * (DESIGN §4). Anyone can issue from it; the pin step is what excludes them.
 *
 * @module
 */

/** Bootstrap CA certificate (P-256, valid 2026–2126). */
export const BOOTSTRAP_CA_CERT_PEM = `-----BEGIN CERTIFICATE-----
MIIBlzCCAT2gAwIBAgIBATAKBggqhkjOPQQDAjBAMT4wPAYDVQQDEzVmbHktdmF1
bHQgcHVibGljIGJvb3RzdHJhcCBDQSAoYXV0aGVudGljYXRlcyBub3RoaW5nKTAg
Fw0yNjAxMDEwMDAwMDBaGA8yMTI2MDEwMTAwMDAwMFowQDE+MDwGA1UEAxM1Zmx5
LXZhdWx0IHB1YmxpYyBib290c3RyYXAgQ0EgKGF1dGhlbnRpY2F0ZXMgbm90aGlu
ZykwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAAT4BVXjZJx+a4VGp1/peJbL1mHs
ItT2nanL1WikD9YjGOhB5oNDijUhyPLhHLtoHWzRyNyKXX9fMfumx6gNoGTXoyYw
JDASBgNVHRMBAf8ECDAGAQH/AgEBMA4GA1UdDwEB/wQEAwIBBjAKBggqhkjOPQQD
AgNIADBFAiEAonFLiTStfP9BIrwOfDCwGxizNma5L8hcUqW5nOhGtLwCIE4xraR0
seCcxMkSXVNlP5cV1i32XbnhgDi/6MJQO5Bb
-----END CERTIFICATE-----
`;

/** Bootstrap CA private key, PKCS#8. Public by design; see the module doc. */
export const BOOTSTRAP_CA_KEY_PEM = `-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgQtn7+JFVQFb+dqey
BahMgCgeUhVJueqzPQ5U4x4sfA6hRANCAAT4BVXjZJx+a4VGp1/peJbL1mHsItT2
nanL1WikD9YjGOhB5oNDijUhyPLhHLtoHWzRyNyKXX9fMfumx6gNoGTX
-----END PRIVATE KEY-----
`;
