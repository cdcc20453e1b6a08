/**
 * Opening paths inside a tenant's rootfs without ever leaving it. The rootfs
 * is tenant-controlled: any component of a path init opens there may be a
 * symlink to `/` or to a host directory (`/.fly-vault -> /srv/other`), a
 * `/proc/<pid>/root` magic link, or a FIFO that blocks `open(2)` forever.
 *
 * One mechanism for every such open: `openat2(2)` relative to a descriptor
 * of the rootfs with `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS` — symlinks are
 * resolved as a chroot would (an absolute target means the rootfs's `/`,
 * `..` stops at it), magic links are refused — and `O_NONBLOCK`, so a FIFO
 * or a device cannot hold init. `RESOLVE_NO_SYMLINKS` is added where the
 * caller wants no symlink at all (mount points). Reached through Deno's FFI
 * to libc's `syscall`, as a container runtime does through its C library;
 * there is no racy lstat-then-open window.
 *
 * @module
 */
import { VaultError } from "../errors/mod.ts";

const SYS_OPENAT2: Record<string, number> = { x86_64: 437, aarch64: 437 };
const O_RDONLY = 0;
const O_NONBLOCK = 0o4000;
const O_DIRECTORY = 0o200000;
const O_CLOEXEC = 0o2000000;
const O_PATH = 0o10000000;
const RESOLVE_NO_MAGICLINKS = 0x02;
const RESOLVE_NO_SYMLINKS = 0x04;
const RESOLVE_IN_ROOT = 0x10;
const ENOENT = 2;
const ENOTDIR = 20;
const ELOOP = 40;
const EXDEV = 18;

type Libc = Deno.DynamicLibrary<{
  syscall: { parameters: ["i64", "i64", "buffer", "buffer", "usize"]; result: "i64" };
  open: { parameters: ["buffer", "i32", "u32"]; result: "i32" };
  close: { parameters: ["i32"]; result: "i32" };
  read: { parameters: ["i32", "buffer", "usize"]; result: "isize" };
  __errno_location: { parameters: []; result: "pointer" };
}>;

let libc: Libc | undefined;

function lib(): Libc {
  if (libc) return libc;
  if (SYS_OPENAT2[Deno.build.arch] === undefined || Deno.build.os !== "linux") {
    throw new VaultError("rootfs.unsupported", `openat2 is not wired for ${Deno.build.arch}`);
  }
  libc = Deno.dlopen("libc.so.6", {
    syscall: { parameters: ["i64", "i64", "buffer", "buffer", "usize"], result: "i64" },
    open: { parameters: ["buffer", "i32", "u32"], result: "i32" },
    close: { parameters: ["i32"], result: "i32" },
    read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
    __errno_location: { parameters: [], result: "pointer" },
  });
  return libc;
}

function errno(l: Libc): number {
  const p = l.symbols.__errno_location();
  return p ? new Deno.UnsafePointerView(p).getInt32() : 0;
}

function cstr(s: string): Uint8Array<ArrayBuffer> {
  const b = new TextEncoder().encode(s);
  const out = new Uint8Array(b.length + 1);
  out.set(b);
  return out;
}

/** Why an in-root open failed, as errno. */
export class InRootError extends Error {
  constructor(readonly errno: number, message: string) {
    super(message);
  }
  /** The path (or a component of it) does not exist inside the rootfs. */
  get notFound(): boolean {
    return this.errno === ENOENT || this.errno === ENOTDIR;
  }
  /** A symlink or magic link was in the way (and the open refused it). */
  get symlink(): boolean {
    return this.errno === ELOOP || this.errno === EXDEV;
  }
}

/** How {@link openInRoot} resolves the path. */
export interface InRootOptions {
  /** Refuse any symlink on the way, not just those leaving the root (mount points). */
  noSymlinks?: boolean;
  /** An `O_PATH` descriptor (for mounting onto), not a readable one. */
  pathOnly?: boolean;
  /** Keep the descriptor across exec (to hand `/proc/self/fd/N` to a child). */
  inherit?: boolean;
}

/**
 * Opens `rel` (a path inside `root`, leading `/` optional) read-only, never
 * resolving outside `root`. Returns a raw descriptor; close it with
 * {@link closeFd}. Throws {@link InRootError} with the errno on failure.
 */
export function openInRoot(root: string, rel: string, opts: InRootOptions = {}): number {
  const l = lib();
  const rootFd = l.symbols.open(cstr(root), O_PATH | O_DIRECTORY | O_CLOEXEC, 0);
  if (rootFd < 0) {
    const e = errno(l);
    throw new InRootError(e, `cannot open the rootfs ${root} (errno ${e})`);
  }
  try {
    // struct open_how { u64 flags; u64 mode; u64 resolve; }
    const how = new BigUint64Array(3);
    how[0] = BigInt(
      (opts.pathOnly ? O_PATH : O_RDONLY | O_NONBLOCK) | (opts.inherit ? 0 : O_CLOEXEC),
    );
    how[2] = BigInt(
      RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | (opts.noSymlinks ? RESOLVE_NO_SYMLINKS : 0),
    );
    const path = rel.replace(/^\/+/, "") || ".";
    const fd = Number(
      l.symbols.syscall(
        BigInt(SYS_OPENAT2[Deno.build.arch]),
        BigInt(rootFd),
        cstr(path),
        new Uint8Array(how.buffer),
        24n,
      ),
    );
    if (fd < 0) {
      const e = errno(l);
      throw new InRootError(e, `cannot open /${path} inside the rootfs (errno ${e})`);
    }
    return fd;
  } finally {
    l.symbols.close(rootFd);
  }
}

/** Closes a descriptor from {@link openInRoot}. */
export function closeFd(fd: number): void {
  lib().symbols.close(fd);
}

/**
 * Reads the regular file at `rel` inside `root` (see {@link openInRoot}), at
 * most `maxBytes`. Returns `null` when it does not exist in the rootfs (a
 * symlink pointing out of it resolves inside instead, so usually to nothing).
 * Throws `rootfs.unsafe_path` when it is not a regular file or too large.
 */
export async function readFileInRoot(
  root: string,
  rel: string,
  maxBytes: number,
): Promise<Uint8Array | null> {
  let fd: number;
  try {
    fd = openInRoot(root, rel);
  } catch (err) {
    if (err instanceof InRootError && err.notFound) return null;
    if (err instanceof InRootError && err.symlink) {
      throw new VaultError(
        "rootfs.unsafe_path",
        `/${rel.replace(/^\/+/, "")} resolves through a link init does not follow`,
      );
    }
    throw err;
  }
  try {
    // The magic link names exactly the file opened above: no second lookup by name.
    const st = await Deno.stat(`/proc/self/fd/${fd}`);
    if (!st.isFile) {
      throw new VaultError(
        "rootfs.unsafe_path",
        `/${rel.replace(/^\/+/, "")} in the rootfs is not a regular file`,
      );
    }
    if (st.size > maxBytes) {
      throw new VaultError(
        "rootfs.unsafe_path",
        `/${rel.replace(/^\/+/, "")} in the rootfs is larger than ${maxBytes} bytes`,
      );
    }
    const l = lib();
    const out = new Uint8Array(maxBytes + 1);
    let off = 0;
    while (off < out.length) {
      const n = Number(l.symbols.read(fd, out.subarray(off), BigInt(out.length - off)));
      if (n < 0) {
        const e = errno(l);
        throw new InRootError(e, `reading /${rel} failed (errno ${e})`);
      }
      if (n === 0) break;
      off += n;
    }
    if (off > maxBytes) {
      throw new VaultError(
        "rootfs.unsafe_path",
        `/${rel.replace(/^\/+/, "")} in the rootfs is larger than ${maxBytes} bytes`,
      );
    }
    return out.slice(0, off);
  } finally {
    closeFd(fd);
  }
}
