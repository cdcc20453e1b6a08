/**
 * Machines as local processes: each simulated machine runs the real
 * `fly-vault-init` with the environment a Fly Machine gives it, its own
 * OIDC token socket, a directory standing in for the `/data` volume, and
 * its own loopback address (127.x.y.z:8443) standing in for its 6PN
 * address, so a restarted machine comes back at the same address.
 *
 * Two kinds of machine: an image named `oci:DIR[:TAG]` or
 * `containers-storage:NAME` boots that image (see `image.ts`: a fresh
 * overlay root over the unpacked image, in a private mount namespace, the
 * volume at its mount path, the token socket at `/.fly/api`, the image's
 * entrypoint with its Env under the config's env). Any other name runs
 * the repo's own init on the host, for quick tests.
 *
 * @module
 */
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { serveTokenSocket } from "./token_socket.ts";
import { bootArgv, imageEnv, isLocalImage, unpackImage } from "./image.ts";
import { VaultError } from "../errors/mod.ts";
import type { startOidcIssuer } from "./oidc.ts";
import { createFreezer } from "./freeze.ts";

type OidcIssuer = Awaited<ReturnType<typeof startOidcIssuer>>;

/** What a machine is started with. */
export interface MachineLaunch {
  id: string;
  name: string;
  app: string;
  org: string;
  region: string;
  image: string;
  env: Record<string, string>;
  /** The volume's directory, seen by init as /data. */
  volumeDir?: string;
  /** Where an image machine sees the volume (`config.mounts[0].path`; default /data). */
  mountPath?: string;
  /** The machine's "6PN" address; allocated when absent. */
  privateIp?: string;
  /** Changes with every config update (FLY_MACHINE_VERSION). */
  version?: string;
  /**
   * Suspends this machine when its own token socket is asked to (`POST
   * /v1/apps/APP/machines/ID/suspend`, no API token, as on Fly). Without it
   * (a machine not run by a Machines API) the socket answers 503.
   */
  suspend?: () => Promise<{ status: number; body: unknown }>;
}

/** A started machine. */
export interface LaunchedMachine {
  /** `host:port` a client dials. */
  address: string;
  privateIp: string;
  pid: number;
  /** Stops init (SIGTERM by default) and waits for it; closes the token socket. */
  stop(signal?: Deno.Signal): Promise<void>;
  /** Exit code once init exits (null when killed by a signal). */
  exited: Promise<number | null>;
  /** Lines init logged (structured JSON), for tests and `flysim logs`. */
  logs: string[];
  /** How {@link freeze} works here: a cgroup v2 freezer, or SIGSTOP/SIGCONT of the tree. */
  freezer: "cgroup2" | "signals";
  /** Freezes the machine's whole process tree with its memory (suspend). */
  freeze(): Promise<void>;
  /** Thaws it: everything carries on where it was (resume). */
  thaw(): Promise<void>;
}

/** Starts machines. */
export interface MachineLauncher {
  start(machine: MachineLaunch): Promise<LaunchedMachine>;
}

/** The port init serves on, as on Fly's 6PN. */
export const MACHINE_PORT = 8443;

const ROOT = fileURLToPath(new URL("../../", import.meta.url));

/** A random 127.a.b.0/24 block per launcher, so parallel simulations never collide. */
function addressAllocator() {
  const a = 1 + Math.floor(Math.random() * 250);
  const b = 1 + Math.floor(Math.random() * 250);
  let next = 1;
  return () => `127.${a}.${b}.${next++}`;
}

/** Creates a launcher whose machines run init for real. */
export function createInitLauncher(opts: {
  issuer: OidcIssuer;
  /** Where token sockets and per-machine files go. */
  runDir: string;
  orgId?: string;
  appId?: string;
  /** Copy init's log lines to stderr, prefixed with the machine id. */
  echoLogs?: boolean;
  /** Extra env for every machine. */
  env?: Record<string, string>;
  /** Allocates private IPs; pass one to share an address space. */
  allocateIp?: () => string;
  /** Replaces the genuine token the socket mints (forgery and impostor tests). */
  mint?: (machine: MachineLaunch, audience: string) => Promise<string>;
  /** Where images are unpacked, by layer digests (default `runDir/images`). */
  imageCacheDir?: string;
}): MachineLauncher {
  const allocateIp = opts.allocateIp ?? addressAllocator();
  // A machine keeps its 6PN address across restarts and image updates, as on Fly.
  const addresses = new Map<string, string>();
  return {
    async start(m) {
      const dir = join(opts.runDir, m.id);
      await Deno.mkdir(dir, { recursive: true });
      const fromImage = isLocalImage(m.image);
      if (fromImage && Deno.uid() !== 0) {
        throw new VaultError(
          "flysim.image_needs_root",
          `booting ${m.image} needs root (mount namespace, overlay, pivot_root)`,
          "run flysim as root, or use a host-program image name",
        );
      }
      const image = fromImage
        ? await unpackImage(m.image, opts.imageCacheDir ?? join(opts.runDir, "images"))
        : undefined;
      // A fresh path per boot: the previous boot's socket may still be closing.
      const boot = crypto.randomUUID().slice(0, 8);
      // An image machine sees the socket's directory at /.fly, so the socket is named `api`.
      const socketDir = join(dir, `fly-${boot}`);
      if (image) await Deno.mkdir(socketDir);
      const socketPath = image ? join(socketDir, "api") : join(dir, `fly-api-${boot}.sock`);
      const socket = await serveTokenSocket({
        path: socketPath,
        issuer: opts.issuer,
        machine: {
          org: m.org,
          org_id: opts.orgId ?? `org_${m.org}`,
          app: m.app,
          app_id: opts.appId ?? `app_${m.app}`,
          machine_id: m.id,
          machine_name: m.name,
          machine_version: m.version ?? "01JSIMULATED0000000000000",
          region: m.region,
          image: m.image,
        },
        ...(opts.mint ? { mint: (aud: string) => opts.mint!(m, aud) } : {}),
        ...(m.suspend ? { suspend: m.suspend } : {}),
      });
      const privateIp = m.privateIp ?? addresses.get(m.id) ?? allocateIp();
      addresses.set(m.id, privateIp);
      const address = `${privateIp}:${MACHINE_PORT}`;
      const volumeDir = m.volumeDir ?? join(dir, "volume");
      await Deno.mkdir(volumeDir, { recursive: true });
      const flyEnv = {
        FLY_APP_NAME: m.app,
        FLY_MACHINE_ID: m.id,
        FLY_ALLOC_ID: m.id,
        FLY_REGION: m.region,
        PRIMARY_REGION: m.region,
        FLY_PROCESS_GROUP: "app",
        FLY_IMAGE_REF: m.image,
        FLY_MACHINE_VERSION: m.version ?? "01JSIMULATED0000000000000",
        FLY_PRIVATE_IP: privateIp,
        // The one flysim-only setting: every machine shares the host's network, so each
        // listens on its own loopback address instead of [::]:8443.
        FLY_VAULT_LISTEN: address,
      };
      let argv: string[];
      let env: Record<string, string>;
      if (image) {
        // Fly boots a fresh root from the image each start: drop the last boot's writes.
        for await (const e of Deno.readDir(dir)) {
          if (
            e.name.startsWith("boot-") || (e.name.startsWith("fly-") && e.name !== `fly-${boot}`)
          ) {
            await Deno.remove(join(dir, e.name), { recursive: true }).catch(() => {});
          }
        }
        argv = await bootArgv({
          image,
          bootDir: join(dir, `boot-${boot}`),
          volumeDir,
          mountPath: m.mountPath,
          socketDir,
        });
        env = {
          PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
          ...imageEnv(image.config),
          ...opts.env,
          ...m.env,
          ...flyEnv,
        };
      } else {
        // As root, each machine gets a private mount namespace (as a VM would have its own):
        // init's /proc, /dev and persist mounts vanish with it, even on kill -9.
        const isolate = Deno.uid() === 0
          ? ["unshare", "--mount", "--propagation", "private", "--", Deno.execPath()]
          : [Deno.execPath()];
        argv = [
          ...isolate,
          "run",
          "-A",
          "--quiet",
          "--config",
          join(ROOT, "deno.json"),
          join(ROOT, "bin", "fly-vault-init.ts"),
        ];
        env = {
          PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
          ...opts.env,
          ...m.env,
          ...flyEnv,
          FLY_VAULT_DATA: volumeDir,
          FLY_VAULT_TOKEN_SOCKET: socketPath,
        };
      }
      // The whole tree of this boot (init, the vault's namespace holder, shells) can be
      // frozen and thawed at once, as Fly suspends and resumes a VM.
      const freezer = await createFreezer(`${m.id}-${boot}`);
      argv = freezer.wrap(argv);
      const child = new Deno.Command(argv[0], {
        args: argv.slice(1),
        env,
        clearEnv: true,
        stdin: "null",
        stdout: "inherit",
        stderr: "piped",
      }).spawn();
      const logs: string[] = [];
      const { promise: ready, resolve: readyResolve, reject: readyReject } = Promise
        .withResolvers<void>();
      (async () => {
        let buf = "";
        const decoder = new TextDecoder();
        for await (const chunk of child.stderr) {
          buf += decoder.decode(chunk, { stream: true });
          let nl: number;
          while ((nl = buf.indexOf("\n")) >= 0) {
            const line = buf.slice(0, nl);
            buf = buf.slice(nl + 1);
            logs.push(line);
            if (logs.length > 5000) logs.splice(0, 1000);
            if (opts.echoLogs) console.error(`[${m.id}] ${line}`);
            if (line.includes('"init.listening"')) readyResolve();
          }
        }
      })();
      let frozen = false;
      const exited = child.status.then(async (s) => {
        await freezer.release();
        readyReject(
          new Error(
            `init for ${m.id} exited (${s.code}) before listening:\n` +
              logs.slice(-20).join("\n"),
          ),
        );
        socket.close();
        return s.signal ? null : s.code;
      });
      await ready;
      return {
        address,
        privateIp,
        pid: child.pid,
        logs,
        exited,
        freezer: freezer.kind,
        async freeze() {
          frozen = true;
          await freezer.freeze(child.pid);
        },
        async thaw() {
          await freezer.thaw(child.pid);
          frozen = false;
        },
        async stop(signal: Deno.Signal = "SIGTERM") {
          if (frozen && signal === "SIGKILL") {
            // Killed where it stands: a thaw first would let it run (and answer the clients'
            // packets queued while frozen) before it dies, which a failed resume never does.
            await freezer.kill(child.pid).catch(() => {});
          } else if (frozen) {
            // A frozen machine handles no other signal: thaw it so init can end cleanly.
            await freezer.thaw(child.pid).catch(() => {});
          }
          frozen = false;
          try {
            child.kill(signal);
          } catch { /* already gone */ }
          await exited;
        },
      };
    },
  };
}
