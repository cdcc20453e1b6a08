/**
 * A `[vault.NAME]` table for the benches' client configs: a flysim machine
 * reached across a link (local_simulation, the harness's access token).
 *
 * @module
 */
import { TOKEN } from "../../tests/harness.ts";

/** What a bench vault table names. */
export interface BenchVault {
  address: string;
  org: string;
  app: string;
  issuer: string;
  machineId?: string;
  rootfs?: string;
}

/** The table's lines, ending with a blank one. */
export function benchVaultTable(name: string, v: BenchVault): string[] {
  const q = JSON.stringify;
  return [
    `[vault.${name}]`,
    `address = ${q(v.address)}`,
    ...(v.machineId ? [`machine_id = ${q(v.machineId)}`] : []),
    `org = ${q(v.org)}`,
    `app = ${q(v.app)}`,
    `access_token = ${q(TOKEN)}`,
    `oidc_issuer = ${q(v.issuer)}`,
    "local_simulation = true",
    ...(v.rootfs ? [`rootfs = ${q(v.rootfs)}`] : []),
    "",
  ];
}
