/**
 * How init runs a program inside the tenant's rootfs.
 *
 * On Fly and in CI init is root: every program runs in the vault, the
 * rootfs's own mount and PID namespaces entered with `pivot_root`
 * (namespace.ts), where neither init nor the machine's filesystem is
 * reachable. On a developer's laptop running the demo init may not be root:
 * then each program enters an unprivileged user namespace of its own
 * (`unshare --user --map-root-user --mount --pid`, as rootless containers
 * do), where it is root enough to chroot — a weaker fallback for a demo
 * whose tenant is the developer.
 *
 * @module
 */
import { VaultError } from "../errors/mod.ts";
import { ensureNamespace, innerPid, type SpawnOptions } from "./namespace.ts";

/** How to enter the rootfs: decided once per process by {@link detectSandbox}. */
export type SandboxMode = "root" | "userns";

let detected: SandboxMode | undefined;

function isRoot(): boolean {
  return Deno.uid() === 0;
}

/**
 * Finds out how this process can chroot. Root chroots directly; otherwise
 * it probes `unshare --user --map-root-user` once and fails with a clear
 * error when neither works.
 */
export async function detectSandbox(): Promise<SandboxMode> {
  if (detected) return detected;
  if (isRoot()) return detected = "root";
  const probe = await new Deno.Command("unshare", {
    args: ["--user", "--map-root-user", "--mount", "true"],
    stdout: "null",
    stderr: "piped",
  }).output().catch((err) => ({ success: false, stderr: new TextEncoder().encode(String(err)) }));
  if (probe.success) return detected = "userns";
  throw new VaultError(
    "init.no_sandbox",
    "cannot enter the rootfs: not root, and unprivileged user namespaces are unavailable (" +
      new TextDecoder().decode(probe.stderr).trim() + ")",
    "run init as root, or enable user namespaces (sysctl kernel.unprivileged_userns_clone=1)",
  );
}

/** Login-like environment for programs in the rootfs; `extra` wins. */
export function sandboxEnv(extra: Record<string, string> = {}): Record<string, string> {
  return {
    PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    HOME: "/root",
    USER: "root",
    LOGNAME: "root",
    SHELL: "/bin/sh",
    LANG: "C.UTF-8",
    ...extra,
  };
}

/**
 * The full argv that runs `argv` chrooted into `rootfs` with working
 * directory `cwd` (inside the rootfs, default `/root` falling back to `/`).
 * Call {@link detectSandbox} once before.
 */
export function chrootArgv(rootfs: string, argv: string[], cwd = "/root"): string[] {
  const mode = detected ?? (isRoot() ? "root" : "userns");
  // `env --chdir` inside the chroot keeps the working directory relative to the new root;
  // `sh -c 'cd …'` would need a shell in the image.
  const inner = ["chroot", rootfs, "/usr/bin/env", `--chdir=${cwd}`, "--", ...argv];
  return mode === "root"
    ? inner
    : ["unshare", "--user", "--map-root-user", "--mount", "--pid", "--fork", ...inner];
}

/** stdio and environment of a program started in the rootfs. */
export type RootfsSpawnOptions = SpawnOptions;

/**
 * Starts `argv` in the rootfs's vault (its own mount and PID namespaces,
 * shared with the workload and consoles, capabilities cut to `VAULT_CAPS`)
 * with working directory `cwd` and exactly `opts.env`. The returned child is the program itself. In the
 * laptop's `userns` mode, each program gets its own namespaces instead.
 */
export async function spawnInRootfs(
  rootfs: string,
  argv: string[],
  cwd: string,
  opts: RootfsSpawnOptions,
): Promise<Deno.ChildProcess> {
  if (await detectSandbox() === "userns") {
    const [cmd, ...args] = chrootArgv(rootfs, argv, cwd);
    return new Deno.Command(cmd, {
      args,
      env: opts.env,
      clearEnv: true,
      stdin: opts.stdin ?? "null",
      stdout: opts.stdout ?? "inherit",
      stderr: opts.stderr ?? "inherit",
    }).spawn();
  }
  return (await ensureNamespace(rootfs)).spawn(argv, cwd, opts);
}

/**
 * Runs our perl `code` (built-ins only, see `spawnScript` in namespace.ts)
 * inside the rootfs as a program entered like {@link spawnInRootfs} would
 * enter one, `@ARGV` = `args`, working directory `/`. The machine's perl is
 * loaded before the switch, so a rootfs without perl is fine.
 */
export async function spawnScriptInRootfs(
  rootfs: string,
  code: string,
  args: string[],
  opts: RootfsSpawnOptions,
): Promise<Deno.ChildProcess> {
  if (await detectSandbox() === "userns") {
    const enter = `my $root = shift @ARGV;
chroot($root) && chdir("/") or do { print STDERR "fly-vault: cannot enter the rootfs: $!\n"; exit 125 };
`;
    return new Deno.Command("unshare", {
      args: ["--user", "--map-root-user", "--mount", "--pid", "--fork", "/usr/bin/perl", "-e"]
        .concat([enter + code, "--", rootfs], args),
      env: opts.env,
      clearEnv: true,
      stdin: opts.stdin ?? "null",
      stdout: opts.stdout ?? "inherit",
      stderr: opts.stderr ?? "inherit",
    }).spawn();
  }
  return (await ensureNamespace(rootfs)).spawnScript(code, args, "/", opts);
}

/**
 * What a PTY runs to start `argv` in the rootfs's vault with exactly `env`:
 * its argv, the environment to give the PTY (in the vault, the machine's:
 * `env` reaches only the program, never the host programs that enter the
 * vault), and where signals for it go: the PTY's own child stays outside
 * (see namespace.ts), the program is its child.
 */
export async function ptyCommandInRootfs(
  rootfs: string,
  argv: string[],
  cwd: string,
  env: Record<string, string>,
): Promise<
  { argv: string[]; env: Record<string, string>; signalTarget: (pid: number) => number }
> {
  if (await detectSandbox() === "userns") {
    return { argv: chrootArgv(rootfs, argv, cwd), env, signalTarget: (pid) => pid };
  }
  const cmd = (await ensureNamespace(rootfs)).ptyCommand(argv, cwd, env);
  return { ...cmd, signalTarget: innerPid };
}
