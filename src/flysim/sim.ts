/**
 * The whole local Fly in one call: an OIDC issuer, the Machines API on
 * loopback, and machines that run the real init.
 *
 * @module
 */
import { join } from "node:path";
import { startOidcIssuer } from "./oidc.ts";
import { createInitLauncher } from "./runner.ts";
import { type MachinesApi, startMachinesApi } from "./machines_api.ts";

/** A running flysim. */
export interface Flysim {
  issuer: Awaited<ReturnType<typeof startOidcIssuer>>;
  api: MachinesApi;
  org: string;
  close(): Promise<void>;
}

/** Starts flysim; machines' volumes and sockets live under `stateDir`. */
export async function startFlysim(opts: {
  stateDir: string;
  apiToken: string;
  org?: string;
  hostname?: string;
  apiPort?: number;
  echoLogs?: boolean;
}): Promise<Flysim> {
  const org = opts.org ?? "personal";
  const issuer = await startOidcIssuer({ hostname: opts.hostname ?? "127.0.0.1", port: 0 });
  const launcher = createInitLauncher({
    issuer,
    runDir: join(opts.stateDir, "run"),
    echoLogs: opts.echoLogs,
  });
  const api = startMachinesApi({
    hostname: opts.hostname ?? "127.0.0.1",
    port: opts.apiPort ?? 0,
    token: opts.apiToken,
    launcher,
    dataDir: opts.stateDir,
    org,
  });
  return {
    issuer,
    api,
    org,
    async close() {
      await api.close();
      await issuer.close();
    },
  };
}
