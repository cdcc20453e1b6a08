/**
 * Certificates for attest-then-pin (DESIGN §4): the public bootstrap CA,
 * per-boot machine identities, and the SPKI binding an attestation names.
 *
 * @module
 */
export { BOOTSTRAP_CA_CERT_PEM } from "./bootstrap.ts";
export {
  attestationAudience,
  createMachineIdentity,
  identityPemFromDer,
  type MachineIdentity,
  serverNameFor,
  spkiSha256,
  VAULT_DOMAIN,
} from "./identity.ts";
export { derToPem, pemToDer } from "./pem.ts";
export { identityDerProblem } from "./der.ts";
