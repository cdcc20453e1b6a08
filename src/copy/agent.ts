/**
 * The vault side of `cp`, run INSIDE the vault as a tenant program.
 *
 * Every path of a copy is the tenant's: any component may be swapped for a
 * symlink while the copy runs. So init does no path work on the machine at
 * all. It starts this agent in the vault exactly as exec starts a program
 * (the vault's mount and PID namespaces, its root, seccomp filter and
 * reduced capabilities — see `spawnScriptInRootfs`): the kernel then
 * resolves every path as the tenant sees it, and whatever a racing tenant
 * makes the agent do is what the tenant could do anyway. The agent is the
 * machine's perl, loaded before the switch and using built-ins only (no
 * module, nothing of the rootfs runs with init's privileges); the archive
 * work is done by the rootfs's own `tar` (as scp needs the remote's scp),
 * started by the agent inside the vault.
 *
 * Upload (`upload DEST COUNT STAGING`): decides the target as cp does,
 * makes `STAGING` next to it, answers `READY`, then reads frames from stdin
 * (4-byte big-endian length, bytes; length 0 = commit) into `tar -x`. On
 * the commit frame it moves the entries under their final names
 * (directories merged, each file replaced by rename) and answers `DONE\tN`;
 * if stdin ends without it, staging is removed and nothing is committed.
 *
 * Download (`download RECURSIVE SOURCE…`): checks the sources (a last
 * component that is a symlink is copied as a link), answers `READY\tTOTAL`,
 * then becomes `tar -c` writing the archive on stdout.
 *
 * Failures are one line `ERR\tcode\tmessage\thint` (paths as the vault
 * sees them); `TAR` means tar failed and said why on stderr.
 *
 * @module
 */
import { VaultError } from "../errors/mod.ts";
import { sandboxEnv, spawnScriptInRootfs } from "../init/sandbox.ts";
import { tarError } from "./tar.ts";

/** The agent (perl built-ins only: it runs after the switch into the vault). */
export const AGENT = String.raw`
$| = 1;
binmode(STDIN);
binmode(STDOUT);
$SIG{PIPE} = "IGNORE";
sub clean { my $s = shift // ""; $s =~ s/[\x00-\x1f\x7f]/?/g; return $s }
sub fail { die join("\t", "ERR", $_[0], clean($_[1]), clean($_[2])) . "\n" }
sub written {
  my ($what, $errno) = @_;
  fail("copy.no_space", "disk full: $what: $!", "free some space and copy again")
    if $errno == 28 || $errno == 122;
  fail("copy.permission", "$what: $!", "check the permissions of the paths involved")
    if $errno == 13 || $errno == 1 || $errno == 30;
  fail("copy.write", "$what: $!", "check the destination");
}
sub entries {
  my $p = shift;
  opendir(my $d, $p) or return ();
  my @e = grep { $_ ne "." && $_ ne ".." } readdir($d);
  closedir($d);
  return @e;
}
sub rmtree {
  my $p = shift;
  if (!-l $p && -d _) {
    chmod(0700, $p);
    rmtree("$p/$_") for entries($p);
    rmdir($p);
  } else {
    unlink($p);
  }
}
sub clean_path { my $p = shift; return length($p) > 1 ? ($p =~ s{/+$}{}r) : $p }
sub split_path {
  my $c = clean_path(shift);
  my $i = rindex($c, "/");
  return (".", $c) if $i < 0;
  return ($i == 0 ? "/" : substr($c, 0, $i), substr($c, $i + 1));
}
sub find_tar {
  for my $d (split(/:/, $ENV{PATH} // "")) {
    return "$d/tar" if $d =~ m{^/} && -f "$d/tar" && -x _;
  }
  fail("copy.no_tar", "the vault has no tar program (looked in $ENV{PATH})",
    "install tar in the vault's image: cp runs the vault's own tar, as scp needs the remote's scp");
}
sub tree_size {
  my $p = shift;
  my @s = lstat($p) or return 0;
  return $s[7] if -f _;
  return 0 unless -d _;
  my $t = 0;
  $t += tree_size("$p/$_") for entries($p);
  return $t;
}
sub merge {
  my ($from, $to) = @_;
  my @s = lstat($from) or fail("copy.write", "staged $from vanished", "copy again");
  my $src_dir = -d _;
  my $dst_dir = lstat($to) && -d _;
  if ($src_dir && $dst_dir) {
    merge("$from/$_", "$to/$_") for entries($from);
    # Keep the incoming directory's mode and times on the merged one.
    chmod($s[2] & 07777, $to);
    utime($s[8], $s[9], $to);
    rmdir($from);
    return;
  }
  fail("copy.is_directory", "$to is a directory; not replacing it with a file",
    "remove it first, or copy to another name") if $dst_dir;
  rename($from, $to) or written("cannot move into $to", $! + 0);
}
sub upload {
  my ($dest, $count, $name) = @_;
  my ($mode, $dir, $as);
  if (-d $dest) {
    ($mode, $dir) = ("into", clean_path($dest));
  } else {
    fail("copy.no_dest", "destination directory $dest does not exist",
      "create it first, or drop the trailing '/' to copy under that name") if $dest =~ m{/$};
    fail("copy.dest_not_dir", "copying $count entries needs a directory, and $dest is not one",
      "name an existing directory as the destination") if $count != 1;
    ($dir, $as) = split_path($dest);
    fail("copy.no_dest", "destination directory $dir does not exist", "create it first (mkdir -p)")
      unless -d $dir;
    $mode = "as";
  }
  my $tar = find_tar();
  my $staging = ($dir eq "/" ? "" : $dir) . "/$name";
  mkdir($staging, 0700) or written("cannot create $staging", $! + 0);
  my $pid;
  my $ok = eval {
    pipe(my $r, my $w) or fail("copy.failed", "pipe: $!", "");
    $pid = fork();
    defined $pid or fail("copy.failed", "fork: $!", "");
    if ($pid == 0) {
      close($w);
      open(STDIN, "<&", $r) or exit 126;
      open(STDOUT, ">&", \*STDERR) or exit 126;
      exec { $tar } "tar", "-x", "-f", "-", "-p", "--no-same-owner", "-C", $staging;
      print STDERR "tar: cannot run $tar: $!\n";
      exit 127;
    }
    close($r);
    print "READY\n";
    # Frames are parsed from large reads; payload goes to tar as it comes, frame bounds aside.
    my ($commit, $broken, $need, $buf) = (0, 0, 0, "");
    READ: while (1) {
      my $got = sysread(STDIN, $buf, 1 << 18, length($buf));
      last unless $got;
      while (length($buf)) {
        if ($need == 0) {
          next READ if length($buf) < 4;
          $need = unpack("N", substr($buf, 0, 4, ""));
          if ($need == 0) { $commit = 1; last READ }
          next;
        }
        my $take = $need < length($buf) ? $need : length($buf);
        my $off = 0;
        while ($off < $take) {
          my $n = syswrite($w, $buf, $take - $off, $off);
          if (!defined $n) { $broken = 1; last READ }
          $off += $n;
        }
        substr($buf, 0, $take, "");
        $need -= $take;
      }
    }
    kill(9, $pid) unless $commit || $broken;
    close($w);
    waitpid($pid, 0);
    my $status = $?;
    $pid = undef;
    die "ABORT\n" unless $commit || $broken;
    die "TAR\n" if $broken || $status != 0;
    my @got = entries($staging);
    if ($mode eq "as") {
      fail("copy.bad_archive", "expected one entry, got " . scalar(@got), "") if @got != 1;
      merge("$staging/$got[0]", ($dir eq "/" ? "" : $dir) . "/$as");
    } else {
      merge("$staging/$_", ($dir eq "/" ? "" : $dir) . "/$_") for @got;
    }
    rmtree($staging);
    print "DONE\t" . scalar(@got) . "\n";
    1;
  };
  return if $ok;
  my $err = $@;
  if (defined $pid) { kill(9, $pid); waitpid($pid, 0) }
  rmtree($staging);
  die $err;
}

sub download {
  my ($recursive, @sources) = @_;
  my $tar = find_tar();
  my ($total, @args) = (0);
  for my $src (@sources) {
    my $path = clean_path($src);
    lstat($path) or fail("copy.no_source", "$src: no such file or directory in the vault", "");
    fail("copy.is_directory", "$src is a directory", "use cp -r") if -d _ && !$recursive;
    $total += tree_size($path);
    my ($d, $b) = split_path($path);
    # ./name so a name starting with '-' is not read as an option.
    push(@args, "-C", $d, "./$b");
  }
  print "READY\t$total\n";
  exec { $tar } "tar", "-c", "-f", "-", "--numeric-owner", @args;
  print STDERR "tar: cannot run $tar: $!\n";
  exit 127;
}

my $op = shift(@ARGV) // "";
eval {
  if ($op eq "upload") { upload(@ARGV) }
  elsif ($op eq "download") { download(@ARGV) }
  else { fail("copy.failed", "unknown operation", "") }
  1;
} and exit 0;
my $err = $@;
exit 5 if $err eq "ABORT\n";
if ($err eq "TAR\n") { print "TAR\n"; exit 4 }
$err = join("\t", "ERR", "copy.failed", clean($err), "") . "\n" unless $err =~ /^ERR\t/;
print $err;
exit 3;
`;

/** stderr kept from the agent (tar's complaints), at most this many bytes. */
const STDERR_MAX = 64 * 1024;

/** A running agent: its answers line by line, then the rest of its stdout. */
export interface Agent {
  /** The next answer line (without `\n`), or null at the end of its output. */
  line(): Promise<string | null>;
  /** What follows the answers on stdout (the archive of a download). */
  rest(): AsyncIterable<Uint8Array>;
  /** stdin of an upload's agent. */
  stdin: WritableStreamDefaultWriter<Uint8Array> | null;
  /** Resolves with the exit code once it ended, and its stderr (bounded). */
  done(): Promise<{ code: number; stderr: string }>;
  kill(): void;
}

/** Starts the agent for `op` with `args` inside the vault of `rootfs`. */
export async function startAgent(
  rootfs: string,
  args: string[],
  withStdin: boolean,
): Promise<Agent> {
  const child = await spawnScriptInRootfs(rootfs, AGENT, args, {
    env: sandboxEnv(),
    stdin: withStdin ? "piped" : "null",
    stdout: "piped",
    stderr: "piped",
  });
  const stderr = (async () => {
    const chunks: Uint8Array[] = [];
    let size = 0;
    for await (const chunk of child.stderr) {
      if (size < STDERR_MAX) chunks.push(chunk.subarray(0, STDERR_MAX - size));
      size += chunk.length;
    }
    return new TextDecoder().decode(Buffer.concat(chunks));
  })();
  const reader = child.stdout.getReader();
  let pending = new Uint8Array(0);
  let ended = false;
  return {
    async line() {
      while (true) {
        const nl = pending.indexOf(10);
        if (nl >= 0) {
          const text = new TextDecoder().decode(pending.subarray(0, nl));
          pending = pending.subarray(nl + 1);
          return text;
        }
        if (ended || pending.length > 64 * 1024) return null;
        const { value, done } = await reader.read();
        if (done) {
          ended = true;
          continue;
        }
        pending = pending.length ? Buffer.concat([pending, value]) : value;
      }
    },
    async *rest() {
      if (pending.length) yield pending;
      pending = new Uint8Array(0);
      while (!ended) {
        const { value, done } = await reader.read();
        if (done) break;
        yield value;
      }
      ended = true;
    },
    stdin: withStdin ? child.stdin.getWriter() : null,
    async done() {
      const status = await child.status;
      return { code: status.code, stderr: await stderr };
    },
    kill() {
      try {
        child.kill("SIGKILL");
      } catch {
        // already gone
      }
    },
  };
}

/**
 * What an agent's answer line means: `ok` lines are returned, `ERR` becomes
 * its {@link VaultError}, `TAR` or the end of output one made from tar's
 * stderr (`copy.no_space`, …).
 */
export async function answer(
  agent: Agent,
  expect: RegExp,
  action: "read" | "write",
): Promise<RegExpExecArray> {
  const line = await agent.line();
  const ok = line === null ? null : expect.exec(line);
  if (ok) return ok;
  const err = line === null ? null : /^ERR\t(copy\.[a-z_]+)\t([^\t]*)\t([^\t]*)$/.exec(line);
  if (err) throw new VaultError(err[1], err[2], err[3]);
  const { code, stderr } = await agent.done();
  if (line === "TAR" || code === 4) throw tarError(stderr, action);
  const why = stderr.trim().split("\n")[0] || `exit code ${code}`;
  throw new VaultError("copy.failed", `the vault's copy helper failed: ${why}`, "");
}
