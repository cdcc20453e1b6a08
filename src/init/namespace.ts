/**
 * The vault: one mount and PID namespace per rootfs, shared by the workload,
 * consoles and exec (so `ps` in a console sees the workload, as on one
 * machine), with `pivot_root` into the rootfs so neither init, its
 * environment nor the machine's own filesystem is reachable from inside, and
 * with capabilities cut to {@link VAULT_CAPS} so root inside cannot mount,
 * make device nodes or use open_by_handle_at to walk out again, and a
 * seccomp filter against new user namespaces ({@link userNamespaceFilter}).
 *
 * A holder process (`unshare --mount --pid --fork`, bash for the mounts,
 * then perl built-ins) binds the rootfs onto itself, replaces init's /proc
 * with a fresh one for the new PID namespace (its kernel knobs read-only, as
 * runc does) and the machine's /sys with a fresh read-only sysfs,
 * `pivot_root`s into it, drops
 * every capability, makes itself non-dumpable and stays as the namespace's
 * PID 1, reaping orphans, until its stdin (a pipe from init) closes. The old
 * root, stacked over `/` by `pivot_root . .`, is detached from outside
 * (`nsenter --mount -- umount -l /`): after the pivot the holder can run no
 * host program.
 *
 * Programs enter without an extra process in between: init's main thread
 * switches the PID namespace its *children* are created in (setns(2) on a
 * namespace fd, through FFI) just around the spawn, and the child runs the
 * machine's perl, which enters the mount namespace and root, drops
 * capabilities and execs the program in place (see {@link enterScript}). So
 * the spawned pid is the program itself: signals and exit codes are exact.
 * Consoles and `exec -t` are spawned the same way ({@link
 * VaultNamespace.spawnOnPty}): their PTY comes from the vault's own devpts
 * instance (the machine's terminals are not visible inside), and the perl
 * takes it as controlling terminal by its in-vault path `/dev/pts/N`. Only a
 * rootfs without a devpts of its own (unit tests' bare rootfs) still gets a
 * node-pty PTY of the machine, which cannot be spawned that way (node-pty
 * starts a thread, which the kernel refuses while the PID namespace
 * differs): it runs `nsenter --pid` whose child takes the terminal over with
 * `setsid --ctty`, then the same perl; signals go to that child
 * ({@link innerPid}).
 *
 * @module
 */
import { VaultError } from "../errors/mod.ts";

const CLONE_NEWPID = 0x20000000;
const O_RDONLY_CLOEXEC = 0o2000000;

type Libc = {
  setns(fd: number, nstype: number): number;
  open(path: BufferSource, flags: number): number;
  close(fd: number): number;
};

let libc: Libc | undefined;

function lib(): Libc {
  if (libc) return libc;
  const dl = Deno.dlopen("libc.so.6", {
    setns: { parameters: ["i32", "i32"], result: "i32" },
    open: { parameters: ["buffer", "i32"], result: "i32" },
    close: { parameters: ["i32"], result: "i32" },
  });
  return libc = dl.symbols as unknown as Libc;
}

const cstr = (s: string) => new TextEncoder().encode(s + "\0");

let ownPidNs = -1;

function openNs(path: string): number {
  const fd = lib().open(cstr(path), O_RDONLY_CLOEXEC);
  if (fd < 0) throw new VaultError("init.namespace", `cannot open ${path}`);
  return fd;
}

/**
 * Runs `spawn` (synchronous: it must create its child and start no thread)
 * with the calling thread's children created in the PID namespace `nsFd`.
 */
function inPidNamespace<T>(nsFd: number, spawn: () => T): T {
  if (ownPidNs < 0) ownPidNs = openNs("/proc/self/ns/pid");
  if (lib().setns(nsFd, CLONE_NEWPID) !== 0) {
    throw new VaultError("init.namespace", "cannot enter the vault's PID namespace (setns)");
  }
  try {
    return spawn();
  } finally {
    if (lib().setns(ownPidNs, CLONE_NEWPID) !== 0) {
      // Every later child of init would start inside the vault: never go on like that.
      console.error("init: cannot return to its own PID namespace; exiting");
      Deno.exit(70);
    }
  }
}

/**
 * Capabilities a program in the vault keeps: Docker's default set without
 * MKNOD (there is no device cgroup to stop a block device node). Gone with
 * the rest: SYS_ADMIN (mount, pivot_root, namespaces), DAC_READ_SEARCH
 * (open_by_handle_at walks out of any root), SYS_MODULE, SYS_RAWIO,
 * SYS_PTRACE, SYS_BOOT, SYS_TIME, NET_ADMIN, BPF, PERFMON, and SYS_RESOURCE
 * (it lifts rlimits and eats the volume's reserved blocks init relies on).
 * A developer's root keeps owning files, switching users (apt's `_apt`,
 * su, sudo), ping, ports below 1024 and chroot.
 */
export const VAULT_CAPS = {
  chown: 0,
  dac_override: 1,
  fowner: 3,
  fsetid: 4,
  kill: 5,
  setgid: 6,
  setuid: 7,
  setpcap: 8,
  net_bind_service: 10,
  net_raw: 13,
  sys_chroot: 18,
  audit_write: 29,
  setfcap: 31,
} as const;

/** {@link VAULT_CAPS} as the mask /proc/PID/status shows (CapBnd, CapPrm, CapEff). */
export const VAULT_CAP_MASK = Object.values(VAULT_CAPS).reduce((m, c) => m | (1n << BigInt(c)), 0n);

/** Syscall numbers perl's `syscall` needs, per architecture. */
const SYSCALLS = {
  x86_64: { setns: 308, pivot_root: 155, prctl: 157, capset: 126, setsid: 112 },
  aarch64: { setns: 268, pivot_root: 41, prctl: 167, capset: 91, setsid: 157 },
} as const;

function sys(): {
  setns: number;
  pivot_root: number;
  prctl: number;
  capset: number;
  setsid: number;
} {
  const nr = SYSCALLS[Deno.build.arch as keyof typeof SYSCALLS];
  if (!nr) throw new VaultError("init.namespace", `no vault support on ${Deno.build.arch}`);
  return nr;
}

/** How the kernel names an architecture to seccomp, and its namespace-making syscalls. */
const SECCOMP_ARCHES = {
  // Native, then the 32-bit ABI the same kernel also runs (i386, arm).
  x86_64: [
    { audit: 0xc000003e, unshare: 272, clone: 56, clone3: 435, x32: true },
    { audit: 0x40000003, unshare: 310, clone: 120, clone3: 435, x32: false },
  ],
  aarch64: [
    { audit: 0xc00000b7, unshare: 97, clone: 220, clone3: 435, x32: false },
    { audit: 0x40000028, unshare: 337, clone: 120, clone3: 435, x32: false },
  ],
} as const;

const CLONE_NEWUSER = 0x10000000;

/**
 * A seccomp filter (classic BPF, as hex for perl's `pack`) that refuses new
 * user namespaces, as Docker's default profile does without SYS_ADMIN:
 * inside one, root would get every capability back over its own mounts and
 * a much wider kernel surface. `unshare`/`clone` with CLONE_NEWUSER fail
 * EPERM; `clone3`, whose flags a filter cannot read, fails ENOSYS so libc
 * falls back to `clone`; x32 calls are refused. Anything else is allowed.
 */
export function userNamespaceFilter(arch: string = Deno.build.arch): string {
  const abis = SECCOMP_ARCHES[arch as keyof typeof SECCOMP_ARCHES];
  if (!abis) throw new VaultError("init.namespace", `no vault support on ${arch}`);
  type Op = { code: number; k: number; jt?: string; jf?: string; label?: string };
  const LD = 0x20, JEQ = 0x15, JGE = 0x35, JSET = 0x45, RET = 0x06;
  const ALLOW = 0x7fff0000, ERRNO = 0x00050000;
  const ops: Op[] = [{ code: LD, k: 4 }]; // seccomp_data.arch
  abis.forEach((abi, i) => {
    const next = `abi${i + 1}`;
    ops.push({ code: JEQ, k: abi.audit, jf: next });
    ops.push({ code: LD, k: 0 }); // seccomp_data.nr
    if (abi.x32) ops.push({ code: JGE, k: 0x40000000, jt: "eperm" });
    ops.push({ code: JEQ, k: abi.unshare, jt: "flags" });
    ops.push({ code: JEQ, k: abi.clone, jt: "flags" });
    ops.push({ code: JEQ, k: abi.clone3, jt: "enosys" });
    ops.push({ code: RET, k: ALLOW });
    ops.push({ code: LD, k: 4, label: next }); // reload the arch for the next test
  });
  ops.push({ code: RET, k: ALLOW });
  ops.push({ code: LD, k: 16, label: "flags" }); // args[0], low half
  ops.push({ code: JSET, k: CLONE_NEWUSER, jt: "eperm" });
  ops.push({ code: RET, k: ALLOW });
  ops.push({ code: RET, k: ERRNO | 1, label: "eperm" });
  ops.push({ code: RET, k: ERRNO | 38, label: "enosys" });
  const at = (label: string | undefined, from: number) => {
    if (!label) return 0;
    const to = ops.findIndex((op) => op.label === label);
    if (to <= from) throw new Error(`bad BPF label ${label}`);
    return to - from - 1;
  };
  const bytes = new Uint8Array(ops.length * 8);
  const view = new DataView(bytes.buffer);
  ops.forEach((op, i) => {
    view.setUint16(i * 8, op.code, true);
    view.setUint8(i * 8 + 2, at(op.jt, i));
    view.setUint8(i * 8 + 3, at(op.jf, i));
    view.setUint32(i * 8 + 4, op.k >>> 0, true);
  });
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Perl (perl-base, Essential in Debian) helpers: loaded from the machine's
 * own root before they enter the vault, they run only built-ins afterwards,
 * so nothing in the tenant's rootfs (its ld.so, libc, /etc/ld.so.preload,
 * a `setpriv` of its own) runs while capabilities are still held. The
 * capability drop therefore happens in the same process as setns/chroot,
 * right before the exec of the program, as container runtimes do it.
 */
const PERL_CAPS = (nr: { prctl: number; capset: number }) =>
  `sub dropcaps {
  my ($last, $lo, $hi, @keep) = @_;
  my %keep = map { $_ => 1 } @keep;
  for my $c (0 .. $last) {
    next if $keep{$c};
    syscall(${nr.prctl}, 24, $c, 0, 0, 0) == 0 or fail("PR_CAPBSET_DROP $c: $!");
  }
  syscall(${nr.prctl}, 47, 4, 0, 0, 0) == 0 or $! + 0 == 22 or fail("PR_CAP_AMBIENT: $!");
  # syscall wants writable strings, not pack's temporaries.
  my ($head, $data) = (pack("LL", 0x20080522, 0), pack("L6", $lo, $lo, 0, $hi, $hi, 0));
  syscall(${nr.capset}, $head, $data) == 0 or fail("capset: $!");
}
sub lastcap {
  open(my $f, "<", "/proc/sys/kernel/cap_last_cap") or fail("cap_last_cap: $!");
  my $n = <$f>;
  return $n + 0;
}
`;

/**
 * Takes the terminal `/dev/pts/$pts` of the vault's own devpts (opened by
 * its in-vault path, once inside its root) as controlling terminal and
 * stdio: a new session, TIOCSCTTY, then fds 0-2. Anything printed before
 * (a failure to enter) went to the stderr pipe init reads.
 */
const ATTACH_TTY = (nr: { setsid: number }) =>
  `syscall(${nr.setsid}) >= 0 or fail("setsid: $!");
open(my $tty, "+<", "/dev/pts/$pts") or fail("terminal /dev/pts/$pts: $!");
-c $tty or fail("/dev/pts/$pts is not a terminal");
ioctl($tty, 0x540E, 0) or fail("TIOCSCTTY: $!");
open(STDIN, "<&", $tty) && open(STDOUT, ">&", $tty) && open(STDERR, ">&", $tty) or fail("dup: $!");
close($tty);
`;

/**
 * Enters the vault and runs a program there: \`perl -e ENTER -- holderPid cwd
 * nEnv K=V… argv…\` (with `tty`, `pts holderPid …`: the program runs on the
 * vault's `/dev/pts/<pts>`, see {@link ATTACH_TTY}). The program's
 * environment travels as arguments, so no host-side program (nsenter,
 * setsid, perl) ever starts with an environment the client chose
 * (LD_PRELOAD or LD_LIBRARY_PATH naming a file in the rootfs would load it
 * into a host program with every capability).
 */
function enterScript(then = EXEC_PROGRAM, tty = false): string {
  const nr = sys();
  const keep = Object.values(VAULT_CAPS).join(", ");
  return `$0 = "fly-vault-enter";
sub fail { print STDERR "fly-vault: cannot enter the vault: $_[0]\n"; exit 125 }
${PERL_CAPS(nr)}
${tty ? 'my $pts = shift @ARGV; $pts =~ /^\\d+$/ or fail("bad terminal number");' : ""}
my ($pid, $cwd, $n) = splice(@ARGV, 0, 3);
my %env = map { split(/=/, $_, 2) } splice(@ARGV, 0, $n);
@ARGV or fail("no program");
my $last = lastcap();
open(my $ns, "<", "/proc/$pid/ns/mnt") or fail("mount namespace: $!");
opendir(my $root, "/proc/$pid/root") or fail("root: $!");
syscall(${nr.setns}, fileno($ns), 0x20000) == 0 or fail("setns: $!");
close($ns);
chdir($root) or fail("fchdir: $!");
chroot(".") or fail("chroot: $!");
closedir($root);
${
    tty
      ? ATTACH_TTY(nr)
      : ""
  }# The filter first: installing one without no_new_privs needs SYS_ADMIN, still held here.
my $filter = pack("H*", "${userNamespaceFilter()}");
my $prog = pack("S x6 P", length($filter) / 8, $filter);
syscall(${nr.prctl}, 22, 2, $prog, 0, 0) == 0 or fail("seccomp: $!");
dropcaps($last, ${Number(VAULT_CAP_MASK & 0xffffffffn)}, ${Number(VAULT_CAP_MASK >> 32n)}, ${keep});
if (!chdir($cwd)) { print STDERR "fly-vault: cannot change directory to '$cwd': $!\n"; exit 125 }
%ENV = %env;
${then}`;
}

const EXEC_PROGRAM = `exec { $ARGV[0] } @ARGV;
my $err = $! + 0;
print STDERR "fly-vault: cannot run '$ARGV[0]': $!\n";
exit($err == 2 ? 127 : 126);
`;

/**
 * The holder, after the bash part has mounted: pivots, drops every
 * capability (it only waits and reaps from then on) and makes itself
 * non-dumpable, so no program inside can ptrace it or read its memory,
 * environment or fds (its pipes lead to init).
 */
function holderPerl(): string {
  const nr = sys();
  return `$0 = "fly-vault-holder";
sub fail { print STDERR "$_[0]\n"; exit 1 }
${PERL_CAPS(nr)}
my $last = lastcap();
my ($new, $old) = (".", ".");
syscall(${nr.pivot_root}, $new, $old) == 0 or fail("pivot_root: $!");
chdir("/") or fail("chdir: $!");
dropcaps($last, 0, 0);
syscall(${nr.prctl}, 4, 0, 0, 0, 0) == 0 or fail("PR_SET_DUMPABLE: $!");
$SIG{CHLD} = "IGNORE";
$| = 1;
print "pivoted\n";
1 while <STDIN>;
`;
}

// The rootfs path comes on stdin, not argv: no host path shows in the vault's \`ps\`.
// bash mounts with the machine's tools, then becomes the perl holder, which pivots.
const HOLDER_SCRIPT = `set -e
read -r R
mount --rbind -- "$R" "$R"
mount --make-rprivate -- "$R"
# init's /proc shows init's PID namespace: replace it with one for the vault's.
umount -l -- "$R/proc" 2>/dev/null || true
if [ -d "$R/proc" ] && [ ! -L "$R/proc" ]; then
  mount -t proc -o nosuid,nodev,noexec proc "$R/proc"
  # As runc does: root needs no capability to write a sysctl (kernel.core_pattern and
  # kernel.modprobe name programs the kernel runs as the machine's root) or sysrq-trigger
  # (reboot, crash), so those are read-only, and what only leaks the machine's state is masked.
  for p in sys sysrq-trigger irq bus fs; do
    if [ -e "$R/proc/$p" ]; then
      mount --bind -- "$R/proc/$p" "$R/proc/$p"
      mount -o remount,bind,ro,nosuid,nodev,noexec -- "$R/proc/$p"
    fi
  done
  for p in kcore keys latency_stats timer_list timer_stats sched_debug; do
    if [ -f "$R/proc/$p" ]; then mount --bind -- /dev/null "$R/proc/$p"; fi
  done
  for p in acpi scsi; do
    if [ -d "$R/proc/$p" ]; then mount -t tmpfs -o ro,nosuid,nodev,noexec,size=0 tmpfs "$R/proc/$p"; fi
  done
fi
# The machine's /sys is writable (uevent_helper, cgroup release_agent, power/state):
# the vault gets a fresh read-only sysfs instead.
if [ -d "$R/sys" ] && [ ! -L "$R/sys" ]; then
  umount -l -- "$R/sys" 2>/dev/null || true
  mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$R/sys"
fi
cd -- "$R"
exec /usr/bin/perl -e "$1"
`;

/** A running vault namespace. */
export interface VaultNamespace {
  readonly rootfs: string;
  /** Host pid of the namespace's PID 1. */
  readonly holderPid: number;
  /** Resolves when the holder is gone (and with it every process inside). */
  readonly exited: Promise<void>;
  /** Spawns `argv` inside, working directory `cwd` (inside the rootfs), exactly `env`. */
  spawn(argv: string[], cwd: string, opts: SpawnOptions): Deno.ChildProcess;
  /**
   * What a PTY runs to start `argv` inside with exactly `env` (see
   * {@link innerPid}): its argv, and the environment the PTY must be given
   * (the machine's, not `env`, which only the program gets).
   */
  ptyCommand(
    argv: string[],
    cwd: string,
    env: Record<string, string>,
  ): { argv: string[]; env: Record<string, string> };
  /**
   * Like {@link spawn}, but instead of exec'ing a program of the rootfs the
   * machine's perl goes on with `code` once inside (capabilities dropped,
   * seccomp on), `@ARGV` = `args`: a helper of ours that runs no code of the
   * rootfs with init's privileges. `code` may use perl built-ins only (no
   * `use`: modules would load from the rootfs).
   */
  spawnScript(code: string, args: string[], cwd: string, opts: SpawnOptions): Deno.ChildProcess;
  /**
   * Spawns `argv` inside on the vault's terminal `/dev/pts/<pts>` (of the
   * devpts instance mounted at the rootfs's /dev/pts, allocated by the
   * caller): it becomes the program's controlling terminal and stdio. The
   * child is the program itself (exact pid, exit status and signals); its
   * stderr pipe carries only what is printed before the terminal is taken
   * (a failure to enter) and then ends.
   */
  spawnOnPty(
    pts: number,
    argv: string[],
    cwd: string,
    env: Record<string, string>,
  ): Deno.ChildProcess;
  /** Host pids of every process inside but the holder. */
  pids(): Promise<number[]>;
  /**
   * SIGTERM to everything inside, SIGKILL after `graceMs` (the holder's
   * death kills the whole namespace); resolves once it is all gone, with the
   * number of processes found.
   */
  stop(graceMs?: number): Promise<number>;
}

/** stdio and environment of {@link VaultNamespace.spawn}. */
export interface SpawnOptions {
  env: Record<string, string>;
  stdin?: "piped" | "null" | "inherit";
  stdout?: "piped" | "null" | "inherit";
  stderr?: "piped" | "null" | "inherit";
}

/** How long the holder may take to mount and pivot before init gives up on it. */
const START_TIMEOUT_MS = 15_000;

const HOST_ENV = { PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" };

async function run(args: string[]): Promise<void> {
  const out = await new Deno.Command(args[0], {
    args: args.slice(1),
    env: HOST_ENV,
    clearEnv: true,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new VaultError(
      "init.namespace",
      `${args.join(" ")}: ${new TextDecoder().decode(out.stderr).trim()}`,
    );
  }
}

async function nsLink(pid: number): Promise<string | null> {
  try {
    return await Deno.readLink(`/proc/${pid}/ns/pid`);
  } catch {
    return null;
  }
}

/** The first child of `pid` (the process an `nsenter --pid` started), or `pid` itself. */
export function innerPid(pid: number): number {
  try {
    const first = Deno.readTextFileSync(`/proc/${pid}/task/${pid}/children`).trim().split(" ")[0];
    if (first) return Number(first);
  } catch {
    // gone already
  }
  return pid;
}

/** Starts the vault namespace of `rootfs` (mounts already prepared, or none). */
export async function startNamespace(rootfs: string): Promise<VaultNamespace> {
  const holder = new Deno.Command("unshare", {
    args: [
      "--mount",
      "--pid",
      "--fork",
      "--kill-child",
      "--propagation",
      "private",
      "--",
      "bash",
      "-c",
      HOLDER_SCRIPT,
      "fly-vault-holder",
      holderPerl(),
    ],
    env: HOST_ENV,
    clearEnv: true,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stdin = holder.stdin.getWriter();
  // Kept open: the holder ends when init's end of this pipe closes.
  await stdin.write(new TextEncoder().encode(rootfs + "\n"));
  const stderr = new Response(holder.stderr).text();
  const status = holder.status;
  const lines = holder.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const failed = async (why: string): Promise<never> => {
    try {
      holder.kill("SIGKILL");
    } catch { /* gone */ }
    await status;
    throw new VaultError(
      "init.namespace",
      `cannot set up the vault namespace: ${why} ${(await stderr).trim()}`.trim(),
      "init needs root, util-linux (unshare, nsenter, mount, umount), bash and perl",
    );
  };
  let timer: ReturnType<typeof setTimeout> | undefined;
  const first = await Promise.race([
    lines.read(),
    status.then(() => null),
    new Promise<null>((r) => timer = setTimeout(() => r(null), START_TIMEOUT_MS)),
  ]);
  clearTimeout(timer);
  if (!first || first.done || !first.value.includes("pivoted")) {
    return await failed("the holder did not start:");
  }
  lines.releaseLock();
  const holderPid = innerPid(holder.pid);
  if (holderPid === holder.pid) return await failed("no holder process");
  // Detach the machine's root, stacked over the vault's `/` by `pivot_root . .`.
  await run(["nsenter", `--target=${holderPid}`, "--mount", "--", "umount", "-l", "/"]).catch(
    (err) => failed(String(err.message)),
  );
  const nsFd = openNs(`/proc/${holderPid}/ns/pid`);
  const link = await nsLink(holderPid);
  let gone = false;
  const exited = status.then(() => {
    gone = true;
    lib().close(nsFd);
  });
  const script = enterScript();
  const ttyScript = enterScript(EXEC_PROGRAM, true);
  // The program's environment rides in argv (see enterScript); perl itself starts with HOST_ENV.
  const enterArgv = (argv: string[], cwd: string, env: Record<string, string>, code = script) => {
    const pairs = Object.entries(env).map(([k, v]) => `${k}=${v}`);
    return ["/usr/bin/perl", "-e", code, "--", String(holderPid), cwd, String(pairs.length)]
      .concat(pairs, argv);
  };
  const spawnEntered = (cmdArgv: string[], opts: SpawnOptions) => {
    if (gone) throw new VaultError("init.namespace", "the vault namespace has ended");
    const [cmd, ...args] = cmdArgv;
    return inPidNamespace(nsFd, () =>
      new Deno.Command(cmd, {
        args,
        env: HOST_ENV,
        clearEnv: true,
        stdin: opts.stdin ?? "null",
        stdout: opts.stdout ?? "inherit",
        stderr: opts.stderr ?? "inherit",
      }).spawn());
  };
  const pids = async () => {
    const found: number[] = [];
    if (!link) return found;
    for await (const entry of Deno.readDir("/proc")) {
      if (!/^\d+$/.test(entry.name)) continue;
      const pid = Number(entry.name);
      if (pid !== holderPid && await nsLink(pid) === link) found.push(pid);
    }
    return found;
  };
  return {
    rootfs,
    holderPid,
    exited,
    spawn: (argv, cwd, opts) => spawnEntered(enterArgv(argv, cwd, opts.env), opts),
    spawnScript: (code, args, cwd, opts) =>
      spawnEntered(enterArgv(args.length ? args : [""], cwd, opts.env, enterScript(code)), opts),
    spawnOnPty(pts, argv, cwd, env) {
      const [perl, e, code, dashes, ...rest] = enterArgv(argv, cwd, env, ttyScript);
      return spawnEntered([perl, e, code, dashes, String(pts), ...rest], {
        env,
        stdin: "null",
        stdout: "null",
        stderr: "piped",
      });
    },
    ptyCommand(argv, cwd, env) {
      if (gone) throw new VaultError("init.namespace", "the vault namespace has ended");
      // nsenter --pid forks; its child (in the vault) makes itself session leader and steals
      // the terminal, so ^C and ^Z reach the program only, not the nsenter left outside.
      return {
        argv: ["nsenter", `--target=${holderPid}`, "--pid", "--", "setsid", "--ctty"]
          .concat(enterArgv(argv, cwd, env)),
        env: HOST_ENV,
      };
    },
    pids,
    async stop(graceMs = 2000) {
      if (gone) return 0;
      const found = await pids();
      for (const pid of found) {
        try {
          Deno.kill(pid, "SIGTERM");
        } catch { /* gone */ }
      }
      const deadline = Date.now() + graceMs;
      while (!gone && Date.now() < deadline && (await pids()).length > 0) {
        await new Promise((r) => setTimeout(r, 50));
      }
      // SIGKILL to a namespace's PID 1 from outside ends every process in it.
      for (const kill of [() => Deno.kill(holderPid, "SIGKILL"), () => holder.kill("SIGKILL")]) {
        try {
          kill();
        } catch { /* gone */ }
      }
      await exited;
      return found.length;
    },
  };
}

const vaults = new Map<string, Promise<VaultNamespace>>();

/** The running namespace of `rootfs`, started on first use (and again if it ended). */
export function ensureNamespace(rootfs: string): Promise<VaultNamespace> {
  const current = vaults.get(rootfs);
  if (current) return current;
  const started = startNamespace(rootfs);
  vaults.set(rootfs, started);
  started.then(
    (ns) => ns.exited.then(() => vaults.get(rootfs) === started && vaults.delete(rootfs)),
    () => vaults.get(rootfs) === started && vaults.delete(rootfs),
  );
  return started;
}

/** Ends the namespace of `rootfs` and everything in it (before a swap); how many processes it held. */
export async function stopNamespace(rootfs: string, graceMs = 2000): Promise<number> {
  const current = vaults.get(rootfs);
  if (!current) return 0;
  vaults.delete(rootfs);
  const ns = await current.catch(() => null);
  return ns ? await ns.stop(graceMs) : 0;
}
