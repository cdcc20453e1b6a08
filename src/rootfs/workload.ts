/**
 * The image's declared command (`/.fly-vault/image.json`, written by
 * `fly-vault build` from the OCI config), run chrooted in the rootfs and
 * restarted with backoff when it dies.
 *
 * @module
 */
import { z } from "zod";
import { VaultError } from "../errors/mod.ts";
import { readFileInRoot } from "./inroot.ts";

/** Where `build` records the workload declaration inside the rootfs. */
export const IMAGE_CONFIG_PATH = ".fly-vault/image.json";

/** The workload declaration: the OCI config fields that say what to run. */
export const ImageConfig = z.object({
  Entrypoint: z.array(z.string()).nullable().optional(),
  Cmd: z.array(z.string()).nullable().optional(),
  Env: z.array(z.string()).nullable().optional(),
  WorkingDir: z.string().optional(),
  User: z.string().optional(),
});
export type ImageConfig = z.infer<typeof ImageConfig>;

/**
 * Reads the declaration of the rootfs; `null` when the image declares none.
 * Resolved inside the rootfs only ({@link readFileInRoot}): `/.fly-vault` may be a
 * tenant's symlink to a host directory, which must read as "no declaration".
 */
export async function readImageConfig(rootfsDir: string): Promise<ImageConfig | null> {
  const bytes = await readFileInRoot(rootfsDir, IMAGE_CONFIG_PATH, 1 << 20);
  if (bytes === null) return null;
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder().decode(bytes));
  } catch (err) {
    throw new VaultError(
      "rootfs.bad_image_config",
      `/${IMAGE_CONFIG_PATH} is not JSON: ${err instanceof Error ? err.message : err}`,
      "rebuild the rootfs with fly-vault build",
    );
  }
  const parsed = ImageConfig.safeParse(json);
  if (!parsed.success) {
    throw new VaultError(
      "rootfs.bad_image_config",
      `/${IMAGE_CONFIG_PATH} is invalid: ${parsed.error.issues[0]?.message}`,
      "rebuild the rootfs with fly-vault build",
    );
  }
  return parsed.data;
}

/** The argv an image declares (Entrypoint + Cmd), empty when none. */
export function workloadArgv(cfg: ImageConfig | null): string[] {
  return [...(cfg?.Entrypoint ?? []), ...(cfg?.Cmd ?? [])];
}

/** Options of {@link startWorkload}. */
export interface WorkloadOptions {
  /**
   * Turns (rootfs, argv, cwd) into the host argv to spawn; default
   * `chroot ROOTFS /usr/bin/env --chdir=CWD -- ARGV…`. Init passes its sandbox's
   * (user namespace on a non-root laptop).
   */
  wrap?: (rootfs: string, argv: string[], cwd: string) => string[];
  /**
   * Starts the workload instead of `wrap` + spawn: init passes its own, which
   * runs it in the rootfs's vault namespace. Called at every (re)start.
   */
  spawn?: (
    argv: string[],
    cwd: string,
    opts: { env: Record<string, string>; stdout: "piped" | "inherit"; stderr: "piped" | "inherit" },
  ) => Promise<Deno.ChildProcess>;
  /** Where stdout and stderr go: a file path to append to, or "inherit" (default). */
  log?: string | "inherit";
  /** First restart delay (ms), doubled up to `maxBackoffMs`; default 1000. */
  backoffMs?: number;
  maxBackoffMs?: number;
  /** Time to wait after SIGTERM before SIGKILL on stop (ms); default 10000. */
  stopTimeoutMs?: number;
  /** Told each time the workload starts or exits. */
  onEvent?: (e: { type: "start"; pid: number } | { type: "exit"; code: number }) => void;
}

/** A running workload supervisor. */
export interface Workload {
  /** The declared argv. */
  readonly argv: string[];
  /** The current process id, or null between restarts. */
  pid(): number | null;
  /** How many times it was (re)started. */
  starts(): number;
  /** Stops it (SIGTERM, then SIGKILL after the timeout) and stops restarting it. */
  stop(): Promise<void>;
}

function defaultWrap(rootfs: string, argv: string[], cwd: string): string[] {
  return ["chroot", rootfs, "/usr/bin/env", `--chdir=${cwd}`, "--", ...argv];
}

/**
 * Starts the rootfs's declared workload, or returns `null` when it declares
 * none. Restarts it with exponential backoff (reset after a minute of life).
 */
export async function startWorkload(
  rootfsDir: string,
  opts: WorkloadOptions = {},
): Promise<Workload | null> {
  const cfg = await readImageConfig(rootfsDir);
  const argv = workloadArgv(cfg);
  if (argv.length === 0) return null;
  const env: Record<string, string> = {
    PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    HOME: "/root",
  };
  for (const kv of cfg?.Env ?? []) {
    const eq = kv.indexOf("=");
    if (eq > 0) env[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  const cwd = cfg?.WorkingDir || "/";
  const hostArgv = (opts.wrap ?? defaultWrap)(rootfsDir, argv, cwd);
  const base = opts.backoffMs ?? 1000;
  const max = opts.maxBackoffMs ?? 30_000;
  let child: Deno.ChildProcess | null = null;
  let stopping = false;
  let starts = 0;
  let delay = base;
  let wake: (() => void) | null = null;
  let logFile: Deno.FsFile | null = null;
  if (opts.log && opts.log !== "inherit") {
    logFile = await Deno.open(opts.log, { append: true, create: true, mode: 0o600 });
  }

  const loop = (async () => {
    while (!stopping) {
      const startedAt = Date.now();
      try {
        const stdio = logFile ? "piped" : "inherit";
        child = opts.spawn
          ? await opts.spawn(argv, cwd, { env, stdout: stdio, stderr: stdio })
          : new Deno.Command(hostArgv[0], {
            args: hostArgv.slice(1),
            env,
            clearEnv: true,
            stdin: "null",
            stdout: stdio,
            stderr: stdio,
          }).spawn();
      } catch {
        child = null;
      }
      let code = 127;
      if (child) {
        starts++;
        opts.onEvent?.({ type: "start", pid: child.pid });
        if (logFile) {
          const lf = logFile;
          const copy = (s: ReadableStream<Uint8Array>) =>
            s.pipeTo(new WritableStream({ write: (c) => lf.write(c).then(() => {}) })).catch(
              () => {},
            );
          void copy(child.stdout);
          void copy(child.stderr);
        }
        code = (await child.status).code;
        child = null;
      }
      opts.onEvent?.({ type: "exit", code });
      if (stopping) break;
      if (Date.now() - startedAt > 60_000) delay = base;
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, delay);
        wake = () => (clearTimeout(t), resolve());
      });
      wake = null;
      delay = Math.min(delay * 2, max);
    }
  })();

  return {
    argv,
    pid: () => (child as Deno.ChildProcess | null)?.pid ?? null,
    starts: () => starts,
    async stop() {
      stopping = true;
      (wake as (() => void) | null)?.();
      const c = child as Deno.ChildProcess | null;
      if (c) {
        try {
          c.kill("SIGTERM");
        } catch { /* gone */ }
        const timer = setTimeout(() => {
          try {
            c.kill("SIGKILL");
          } catch { /* gone */ }
        }, opts.stopTimeoutMs ?? 10_000);
        await c.status;
        clearTimeout(timer);
      }
      await loop;
      logFile?.close();
    },
  };
}
