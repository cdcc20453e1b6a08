/**
 * A small rootfs made from what the host has (no download): bash,
 * coreutils and friends, the programs the README's examples use (htop, top,
 * vi, less, python3 with its standard library, nc, which, sshd) with the
 * shared libraries `ldd` says they need, and terminfo for the usual
 * terminals plus the builder's own `$TERM`, so full-screen programs draw.
 * It is what the demo provisions and what tests run commands in.
 *
 * Debian packages it takes programs from (`.ci/apt-packages`): procps, htop,
 * less, vim, ncurses-bin/-base/-term, python3, netcat-openbsd, openssh-server.
 * A program the host lacks is left out; the rootfs works with any subset
 * that includes a shell.
 *
 * @module
 */
import { dirname, join } from "node:path";

/** Programs copied when the host has them; the rootfs works with any subset that includes a shell. */
// deno-fmt-ignore
export const HOST_ROOTFS_PROGRAMS = [
  "bash", "sh", "dash", "env", "true", "false", "echo", "cat", "ls", "sleep", "uname", "id",
  "stty", "tty", "head", "tail", "wc", "printf", "kill", "grep", "sed", "awk", "mkdir", "rmdir",
  "rm", "cp", "mv", "chmod", "chown", "ln", "date", "hostname", "pwd", "touch", "sha256sum",
  "md5sum", "base64", "tr", "cut", "sort", "uniq", "dd", "tar", "gzip", "gunzip", "zcat", "test",
  "[", "seq", "yes", "stat", "readlink", "realpath", "basename", "dirname", "mktemp", "whoami",
  "groups", "nproc", "df", "du", "find", "xargs", "expr", "timeout", "tee", "nohup", "sync",
  "diff", "cmp", "od", "xxd", "which",
  // procps: what `ps`, `top` and friends read from /proc.
  "ps", "top", "free", "uptime", "pgrep", "pkill", "watch", "htop",
  // Terminals: ncurses tools, pagers, editors.
  "clear", "tput", "tset", "reset", "infocmp", "less", "more", "vi", "vim", "nano",
  // The README's examples: a forward's server, `nc`, and sshd for `pipe`.
  "python3", "nc", "sshd", "ssh-keygen",
];

/**
 * Terminals whose terminfo entries are always included (with the builder's
 * `$TERM`): what terminals announce and what tmux/screen set inside.
 */
// deno-fmt-ignore
export const HOST_ROOTFS_TERMINALS = [
  "xterm-256color", "xterm", "xterm-color", "xterm-16color", "screen", "screen-256color",
  "tmux", "tmux-256color", "vt100", "vt102", "vt220", "linux", "dumb", "ansi", "rxvt",
  "rxvt-unicode", "rxvt-unicode-256color", "alacritty", "xterm-kitty", "foot", "wezterm",
  "st-256color", "konsole", "konsole-256color", "gnome", "gnome-256color", "putty",
  "putty-256color", "iterm2", "ms-terminal", "xterm-ghostty", "contour",
];

/** Where ncurses looks for terminfo (Debian: ncurses-base in /lib, ncurses-term in /usr/share). */
const TERMINFO_DIRS = ["/etc/terminfo", "/lib/terminfo", "/usr/share/terminfo"];

/** Parts of Python's standard library a dev shell does not need (tests, Tk, IDLE, build files). */
// deno-fmt-ignore
const PYTHON_LEAVE_OUT = [
  "test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "pydoc_data", "distutils",
  "config-*", "site-packages", "dist-packages", "__pycache__", "*.pyc",
  // C modules for tests, Tk and Berkeley DB (whose library alone is 1.8 MB).
  "lib-dynload/_test*", "lib-dynload/_xxtest*", "lib-dynload/xx*", "lib-dynload/_ctypes_test*",
  "lib-dynload/_tkinter*", "lib-dynload/_dbm*", "lib-dynload/_gdbm*",
];

async function which(program: string): Promise<string | undefined> {
  for (const dir of ["/usr/bin", "/bin", "/usr/sbin", "/sbin"]) {
    try {
      const path = join(dir, program);
      const info = await Deno.stat(path);
      if (info.isFile) return path;
    } catch { /* next */ }
  }
  return undefined;
}

async function libsOf(path: string): Promise<string[]> {
  const out = await new Deno.Command("ldd", { args: [path], stdout: "piped", stderr: "null" })
    .output();
  const text = new TextDecoder().decode(out.stdout);
  return [...text.matchAll(/(\/[^\s)]+)/g)].map((m) => m[1]);
}

async function copyPreservingLinks(src: string, root: string): Promise<void> {
  const dest = join(root, src);
  await Deno.mkdir(dirname(dest), { recursive: true });
  const info = await Deno.lstat(src);
  if (info.isSymlink) {
    const target = await Deno.readLink(src);
    await Deno.symlink(target, dest).catch(() => {});
    const resolved = target.startsWith("/") ? target : join(dirname(src), target);
    await copyPreservingLinks(resolved, root);
    return;
  }
  try {
    await Deno.lstat(dest);
    return; // already there
  } catch { /* copy */ }
  await Deno.copyFile(src, dest);
  await Deno.chmod(dest, info.mode! & 0o7777);
}

/** Copies a host file into the rootfs at the same path, behind the merged-/usr links. */
async function copyIn(file: string, root: string): Promise<void> {
  const merged = file.replace(/^\/(bin|sbin|lib|lib64)\//, "/usr/$1/");
  await copyPreservingLinks(file, root).catch(async () => {
    await copyPreservingLinks(merged, root).catch(() => {});
  });
}

const exists = (path: string) => Deno.lstat(path).then(() => true, () => false);

/** The terminfo files for `names` (first directory that has each), with what they link to. */
async function terminfoFiles(names: Iterable<string>): Promise<string[]> {
  const files: string[] = [];
  for (const name of new Set(names)) {
    // A TERM is a file name inside the database: nothing that could walk out of it.
    if (!/^[A-Za-z0-9][A-Za-z0-9._+-]*$/.test(name)) continue;
    for (const dir of TERMINFO_DIRS) {
      const path = join(dir, name[0], name);
      if (await exists(path)) {
        files.push(path);
        break;
      }
    }
  }
  return files;
}

/**
 * Python's interpreter comes with `python3`; its standard library (less
 * {@link PYTHON_LEAVE_OUT}) is packed here, with the libraries its C
 * modules load. Returns those modules, for `ldd`.
 */
async function copyPythonStdlib(root: string): Promise<string[]> {
  let real: string;
  try {
    real = await Deno.realPath("/usr/bin/python3");
  } catch {
    return [];
  }
  const version = /python(3\.\d+)$/.exec(real)?.[1];
  if (!version) return [];
  const lib = `usr/lib/python${version}`;
  if (!await exists(`/${lib}/os.py`)) return [];
  const excludes = PYTHON_LEAVE_OUT.map((p) => `--exclude=${lib}/${p}`);
  const pack = new Deno.Command("tar", {
    args: ["-c", "-f", "-", "-C", "/", ...excludes, "--exclude=__pycache__", lib],
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const unpack = new Deno.Command("tar", {
    args: ["-x", "-f", "-", "-C", root],
    stdin: "piped",
    stderr: "null",
  }).spawn();
  await pack.stdout.pipeTo(unpack.stdin);
  const [a, b] = await Promise.all([pack.status, unpack.status]);
  if (!a.success || !b.success) return [];
  // site.py follows Debian's sitecustomize link into /etc: keep it inside the rootfs.
  const custom = `/etc/python${version}/sitecustomize.py`;
  if (await exists(custom)) await copyIn(custom, root);
  const modules: string[] = [];
  try {
    for await (const e of Deno.readDir(`/${lib}/lib-dynload`)) {
      if (e.name.endsWith(".so")) modules.push(`/${lib}/lib-dynload/${e.name}`);
    }
  } catch { /* no C modules: pure-Python ones still work */ }
  return modules;
}

/** The shell's profile: a prompt like `root@vault:~#`, and a TERM the rootfs knows. */
const PROFILE = `# fly-vault demo rootfs: login shells (the console) read this.
if [ -n "$TERM" ] && ! tput -T "$TERM" longname >/dev/null 2>&1; then
  # No terminfo for the client's terminal here: programs would refuse to draw.
  TERM=xterm-256color
  export TERM
fi
if [ -n "$BASH_VERSION" ] && [ -f /etc/bash.bashrc ]; then
  . /etc/bash.bashrc
fi
`;

/** Interactive bash (login or not: \`exec -t VAULT -- bash\`) reads this. */
const BASHRC = `# fly-vault demo rootfs
[ -z "$PS1" ] && return
if [ -n "$TERM" ] && ! tput -T "$TERM" longname >/dev/null 2>&1; then
  TERM=xterm-256color
  export TERM
fi
PS1='\\u@vault:\\w\\$ '
alias ls='ls --color=auto'
alias ll='ls -l'
`;

/** vim without its runtime files: no defaults.vim to look for (E1187), sane settings. */
const VIMRC = `" fly-vault demo rootfs: vim.basic without its runtime files
let g:skip_defaults_vim = 1
set nocompatible backspace=indent,eol,start ruler showcmd incsearch
set ttimeout ttimeoutlen=100
`;

/** sshd for `ssh -o ProxyCommand='fly-vault pipe VAULT localhost:2222' root@VAULT`. */
const SSHD_CONFIG =
  `# fly-vault demo rootfs: reached through \`fly-vault pipe VAULT localhost:2222\`.
Port 2222
ListenAddress 127.0.0.1
ListenAddress ::1
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
AuthorizedKeysFile .ssh/authorized_keys
PrintMotd no
PidFile none
Subsystem sftp /usr/lib/openssh/sftp-server
`;

/** Starts sshd in the vault (host key made on first start); `-D` keeps it in the foreground. */
const VAULT_SSHD = `#!/bin/sh
# Starts the vault's sshd on localhost:2222 for
#   ssh -o ProxyCommand='fly-vault pipe VAULT localhost:2222' root@VAULT
# Put your public key in /root/.ssh/authorized_keys first. Options go to sshd (-D: foreground).
set -e
mkdir -p /run/sshd /root/.ssh
chmod 0755 /run/sshd
chmod 0700 /root/.ssh
if [ ! -f /etc/ssh/ssh_host_ed25519_key ]; then
  ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key
fi
exec /usr/sbin/sshd -e "$@"
`;

/**
 * Lays out a rootfs in `dir` (created if needed): programs from the host
 * with their libraries, terminfo, Python's standard library, /etc/passwd
 * and friends, a login profile, sshd's configuration, empty /proc /sys /dev /tmp.
 */
export async function buildHostRootfs(dir: string): Promise<void> {
  for (
    const d of ["root", "home", "tmp", "proc", "sys", "dev", "etc", "usr/bin", "run", "var/tmp"]
  ) {
    await Deno.mkdir(join(dir, d), { recursive: true });
  }
  await Deno.chmod(join(dir, "tmp"), 0o1777);
  await Deno.chmod(join(dir, "var/tmp"), 0o1777);
  await Deno.chmod(join(dir, "root"), 0o700);
  // Debian's merged /usr: /bin → usr/bin keeps #!/bin/sh scripts working.
  for (const link of ["bin", "sbin", "lib", "lib64"]) {
    await Deno.mkdir(join(dir, "usr", link), { recursive: true });
    await Deno.symlink(`usr/${link}`, join(dir, link)).catch(() => {});
  }
  const files = new Set<string>();
  const needLibs: string[] = [];
  for (const program of HOST_ROOTFS_PROGRAMS) {
    const path = await which(program);
    if (!path) continue;
    files.add(path);
    needLibs.push(path);
  }
  if (files.has("/usr/sbin/sshd")) {
    for (const helper of ["sftp-server"]) {
      const path = `/usr/lib/openssh/${helper}`;
      if (await exists(path)) {
        files.add(path);
        needLibs.push(path);
      }
    }
  }
  needLibs.push(...await copyPythonStdlib(dir));
  for (const path of needLibs) for (const lib of await libsOf(path)) files.add(lib);
  const term = Deno.env.get("TERM");
  for (const f of await terminfoFiles([...HOST_ROOTFS_TERMINALS, ...(term ? [term] : [])])) {
    files.add(f);
  }
  // vim sources $VIMRUNTIME/defaults.vim when there is no ~/.vimrc and fails without it
  // (E1187); our /etc/vim/vimrc makes it return at once, so the rest of the runtime can stay out.
  try {
    for await (const e of Deno.readDir("/usr/share/vim")) {
      const path = `/usr/share/vim/${e.name}/defaults.vim`;
      if (/^vim\d+$/.test(e.name) && await exists(path)) files.add(path);
    }
  } catch { /* no vim */ }
  for (const file of files) await copyIn(file, dir);

  const etc = async (name: string, text: string, mode = 0o644) => {
    await Deno.mkdir(dirname(join(dir, "etc", name)), { recursive: true });
    await Deno.writeTextFile(join(dir, "etc", name), text, { mode });
    await Deno.chmod(join(dir, "etc", name), mode);
  };
  await etc(
    "passwd",
    "root:x:0:0:root:/root:/bin/bash\n" +
      "sshd:x:100:65534:sshd privilege separation:/run/sshd:/bin/false\n" +
      "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
  );
  // "*": no password, but not locked (sshd refuses key logins to a locked "!" account).
  await etc(
    "shadow",
    "root:*:19000:0:99999:7:::\nsshd:*:19000::::::\nnobody:*:19000::::::\n",
    0o640,
  );
  await etc("group", "root:x:0:\nnogroup:x:65534:\n");
  await etc("hostname", "vault\n");
  await etc("profile", PROFILE);
  await etc("bash.bashrc", BASHRC);
  await etc("vim/vimrc", VIMRC);
  await etc("ssh/sshd_config", SSHD_CONFIG);
  await Deno.mkdir(join(dir, "usr/local/sbin"), { recursive: true });
  await Deno.writeTextFile(join(dir, "usr/local/sbin/vault-sshd"), VAULT_SSHD, { mode: 0o755 });
  await Deno.chmod(join(dir, "usr/local/sbin/vault-sshd"), 0o755);
  await etc(
    "os-release",
    'PRETTY_NAME="fly-vault demo rootfs (host binaries)"\nID=flyvault-demo\n',
  );
}

/** Writes the host rootfs as a tar.gz at `path` (GNU tar, numeric owners). */
export async function buildHostRootfsTarball(path: string): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "fly-vault-rootfs-" });
  try {
    await buildHostRootfs(dir);
    await Deno.mkdir(dirname(path), { recursive: true });
    const out = await new Deno.Command("tar", {
      args: ["-czf", path, "--numeric-owner", "-C", dir, "."],
      stderr: "piped",
    }).output();
    if (!out.success) throw new Error(new TextDecoder().decode(out.stderr));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}
