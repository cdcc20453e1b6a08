/**
 * End-to-end harness: a flysim OIDC issuer, real `fly-vault-init` machines
 * (local processes on their own loopback addresses), a client config in a
 * temporary directory, and the real `fly-vault` CLI run as a subprocess.
 */
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { startOidcIssuer } from "../src/flysim/oidc.ts";
import {
  createInitLauncher,
  type LaunchedMachine,
  type MachineLaunch,
} from "../src/flysim/runner.ts";
import { buildHostRootfs } from "../src/flysim/host_rootfs.ts";

export const ROOT = fileURLToPath(new URL("../", import.meta.url));

let cachedRootfs: Promise<string> | undefined;

/** One host rootfs per test process, copied into each machine's volume. */
export function hostRootfsTemplate(): Promise<string> {
  return cachedRootfs ??= (async () => {
    const dir = await Deno.makeTempDir({ prefix: "fv-rootfs-" });
    // ~50 MB per test process: gone with the process, or /tmp fills up over many runs.
    globalThis.addEventListener("unload", () => {
      try {
        Deno.removeSync(dir, { recursive: true });
      } catch {
        // Already gone, or still busy: nothing a test can do about it now.
      }
    });
    await buildHostRootfs(dir);
    return dir;
  })();
}

/** Copies the template rootfs into `volumeDir/rootfs` (cp -a keeps links and modes). */
export async function layRootfs(volumeDir: string): Promise<void> {
  const template = await hostRootfsTemplate();
  await Deno.mkdir(volumeDir, { recursive: true });
  const out = await new Deno.Command("cp", { args: ["-a", template, join(volumeDir, "rootfs")] })
    .output();
  if (!out.success) throw new Error("cp -a failed");
  // Recorded as provisioned, as if it had been uploaded (provision tests upload for real).
  await Deno.mkdir(join(volumeDir, "vault"), { recursive: true });
  await Deno.writeTextFile(
    join(volumeDir, "vault", "state.json"),
    JSON.stringify({ state: "ready", provisioned_at: new Date().toISOString() }),
  );
}

export interface Sim {
  dir: string;
  issuer: Awaited<ReturnType<typeof startOidcIssuer>>;
  configDir: string;
  /** Starts (or restarts, same address and volume) a machine. */
  startMachine(
    id: string,
    opts?: {
      provisioned?: boolean;
      accessToken?: string;
      privateIp?: string;
      /** Extra environment for init (e.g. shorter provisioning bounds in tests). */
      env?: Record<string, string>;
    },
  ): Promise<LaunchedMachine>;
  /** Writes config.toml with one [vault.NAME] per entry. */
  writeConfig(vaults: Record<string, Record<string, unknown>>): Promise<void>;
  /** Runs the fly-vault CLI. */
  client(args: string[], opts?: { stdin?: string; env?: Record<string, string> }): Promise<{
    code: number;
    stdout: string;
    stderr: string;
    ms: number;
  }>;
  machines: Map<string, LaunchedMachine>;
  close(): Promise<void>;
}

export const ORG = "test-org";
export const APP = "vault-tenants";
export const TOKEN = "correct horse battery staple";

/** Starts a simulation. `mint` replaces genuine tokens (forgeries, impostors). */
export async function startSim(
  opts: { mint?: (m: MachineLaunch, aud: string) => Promise<string> } = {},
): Promise<Sim> {
  const dir = await Deno.makeTempDir({ prefix: "fv-sim-" });
  const issuer = await startOidcIssuer({ hostname: "127.0.0.1", port: 0 });
  const launcher = createInitLauncher({ issuer, runDir: join(dir, "run"), mint: opts.mint });
  const machines = new Map<string, LaunchedMachine>();
  const configDir = join(dir, "client");
  await Deno.mkdir(configDir, { recursive: true });
  const sim: Sim = {
    dir,
    issuer,
    configDir,
    machines,
    async startMachine(id, o = {}) {
      const volumeDir = join(dir, "volumes", id);
      const previous = machines.get(id);
      if (!previous && (o.provisioned ?? true)) await layRootfs(volumeDir);
      const m = await launcher.start({
        id,
        name: `tenant-${id}`,
        app: APP,
        org: ORG,
        region: "ord",
        image: "registry.fly.io/vault-tenants/init:test",
        env: { ...o.env, ACCESS_TOKEN: o.accessToken ?? TOKEN },
        volumeDir,
        privateIp: o.privateIp ?? previous?.privateIp,
      });
      machines.set(id, m);
      return m;
    },
    async writeConfig(vaults) {
      const lines: string[] = [];
      for (const [name, v] of Object.entries(vaults)) {
        lines.push(`[vault.${name}]`);
        for (const [k, val] of Object.entries(v)) lines.push(`${k} = ${JSON.stringify(val)}`);
        lines.push("");
      }
      const path = join(configDir, "config.toml");
      await Deno.writeTextFile(path, lines.join("\n"), { mode: 0o600 });
      // It holds an access token: the client refuses it readable by others (like ssh).
      await Deno.chmod(path, 0o600);
    },
    async client(args, o = {}) {
      const started = performance.now();
      const child = new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", "--quiet", join(ROOT, "bin", "fly-vault.ts"), ...args],
        env: { FLY_VAULT_CONFIG_DIR: configDir, NO_COLOR: "1", ...o.env },
        stdin: o.stdin === undefined ? "null" : "piped",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      if (o.stdin !== undefined) {
        const w = child.stdin.getWriter();
        await w.write(new TextEncoder().encode(o.stdin));
        await w.close();
      }
      const out = await child.output();
      return {
        code: out.code,
        stdout: new TextDecoder().decode(out.stdout),
        stderr: new TextDecoder().decode(out.stderr),
        ms: performance.now() - started,
      };
    },
    async close() {
      await Promise.all([...machines.values()].map((m) => m.stop("SIGKILL")));
      await issuer.close();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
  return sim;
}

/** A vault table for machine `m`. */
export function vaultFor(sim: Sim, m: LaunchedMachine, extra: Record<string, unknown> = {}) {
  return {
    address: m.address,
    org: ORG,
    app: APP,
    access_token: TOKEN,
    oidc_issuer: sim.issuer.baseUrl,
    local_simulation: true,
    // The persistent client is on by default; a test wants it explicitly (persist_e2e_test.ts),
    // so no background master authenticates while a test counts init's events.
    persist: "no",
    ...extra,
  };
}
