/**
 * Kernel buffers of a QUIC endpoint's UDP socket. Deno binds the socket in Rust and gives no
 * descriptor, so this finds it among the process's descriptors (a UDP socket bound at the
 * endpoint's port) and sets SO_RCVBUF/SO_SNDBUF through libc (Deno FFI).
 *
 * Why: the kernel's default receive buffer (net.core.rmem_default, usually 208 KiB) holds about
 * 150 full-size datagrams. When anything between the peers (vault-proxy's one JS thread, a busy
 * core) holds packets back and releases them as a burst, the endpoint's buffer overflows and QUIC
 * reads the loss as congestion. 4 MiB (the kernel doubles it for its bookkeeping) absorbs such a
 * burst. As root (init on a Fly machine) SO_RCVBUFFORCE sets it past net.core.rmem_max;
 * otherwise the kernel caps it at rmem_max, silently.
 *
 * Tuning is best effort: a process that cannot (no FFI permission, not Linux, descriptor not
 * found) runs with the kernel's buffers, as before, and says so once.
 *
 * @module
 */

/** Bytes asked for each of the endpoint's receive and send buffers (the kernel reports twice). */
export const ENDPOINT_SOCKET_BUFFER = 4 << 20;

/** A socket's buffers as the kernel reports them (SO_RCVBUF / SO_SNDBUF: twice what was set). */
export interface SocketBuffers {
  rcvbuf: number;
  sndbuf: number;
}

const SOL_SOCKET = 1;
const SO_TYPE = 3;
const SO_SNDBUF = 7;
const SO_RCVBUF = 8;
const SO_SNDBUFFORCE = 32;
const SO_RCVBUFFORCE = 33;
const SOCK_DGRAM = 2;
const AF_INET = 2;
const AF_INET6 = 10;

const SYMBOLS = {
  getsockname: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
} as const;
type Libc = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

let libc: Libc | undefined;

/**
 * Runs `f` with libc, opened on first use and kept: opening it costs ~1.2 ms here (a client
 * command pays that once, after its handshake), each later tuning ~0.2 ms.
 */
function withLibc<T>(f: (c: Libc) => T): T {
  if (Deno.build.os !== "linux") throw new Error(`not supported on ${Deno.build.os}`);
  libc ??= Deno.dlopen("libc.so.6", SYMBOLS).symbols;
  return f(libc);
}

function getInt(c: Libc, fd: number, opt: number): number {
  const v = new Uint8Array(4);
  const len = new Uint8Array(4);
  new DataView(len.buffer).setUint32(0, 4, true);
  if (c.getsockopt(fd, SOL_SOCKET, opt, v, len) < 0) return -1;
  return new DataView(v.buffer).getInt32(0, true);
}

function setInt(c: Libc, fd: number, opt: number, value: number): boolean {
  const v = new Uint8Array(4);
  new DataView(v.buffer).setInt32(0, value, true);
  return c.setsockopt(fd, SOL_SOCKET, opt, v, 4) === 0;
}

/** This process's UDP sockets bound at `port` (either family). */
function udpSocketsAt(c: Libc, port: number): number[] {
  const fds: number[] = [];
  for (const e of Deno.readDirSync("/proc/self/fd")) {
    const fd = Number(e.name);
    const name = new Uint8Array(128);
    const len = new Uint8Array(4);
    new DataView(len.buffer).setUint32(0, name.length, true);
    if (c.getsockname(fd, name, len) < 0) continue; // not a socket, or closed since the listing
    const family = name[0] | (name[1] << 8);
    if (family !== AF_INET && family !== AF_INET6) continue;
    if (((name[2] << 8) | name[3]) !== port) continue;
    if (getInt(c, fd, SO_TYPE) !== SOCK_DGRAM) continue;
    fds.push(fd);
  }
  return fds;
}

/**
 * Sets the receive and send buffers of this process's UDP socket(s) bound at `port` to `bytes`
 * (forced past net.core.rmem_max/wmem_max when root; capped by them otherwise) and returns what
 * the kernel then reports. Throws when there is no such socket or libc cannot be reached.
 */
export function setUdpBuffers(port: number, bytes: number): SocketBuffers {
  return withLibc((c) => {
    const fds = udpSocketsAt(c, port);
    if (fds.length === 0) throw new Error(`no UDP socket of this process is bound at port ${port}`);
    let got: SocketBuffers | undefined;
    for (const fd of fds) {
      // FORCE needs CAP_NET_ADMIN; without it, the plain option (capped at rmem_max/wmem_max).
      if (!setInt(c, fd, SO_RCVBUFFORCE, bytes)) setInt(c, fd, SO_RCVBUF, bytes);
      if (!setInt(c, fd, SO_SNDBUFFORCE, bytes)) setInt(c, fd, SO_SNDBUF, bytes);
      got = { rcvbuf: getInt(c, fd, SO_RCVBUF), sndbuf: getInt(c, fd, SO_SNDBUF) };
    }
    return got!;
  });
}

/** The buffers of this process's UDP socket bound at `port`, or undefined if there is none. */
export function readUdpBuffers(port: number): SocketBuffers | undefined {
  return withLibc((c) => {
    const fd = udpSocketsAt(c, port)[0];
    if (fd === undefined) return undefined;
    return { rcvbuf: getInt(c, fd, SO_RCVBUF), sndbuf: getInt(c, fd, SO_SNDBUF) };
  });
}

let reported = false;
/** Where the one failure line goes (tests capture it). */
let report = (line: string) => console.error(line);

/** Replaces where a tuning failure is reported; returns the previous sink (for tests). */
export function setTuningReport(sink: (line: string) => void): (line: string) => void {
  const prev = report;
  report = sink;
  reported = false;
  return prev;
}

/**
 * Raises the buffers of the QUIC endpoint bound at `port` to {@link ENDPOINT_SOCKET_BUFFER}
 * (`port` may be a function: reading a closed endpoint's address throws, and is a failure too).
 * Never throws: on failure the endpoint keeps the kernel's buffers, and the first failure in
 * this process is reported once (it would be the same for every endpoint). Not Linux: nothing
 * to do, nothing said.
 */
export function tuneEndpointSocket(
  port: number | (() => number),
  bytes = ENDPOINT_SOCKET_BUFFER,
): SocketBuffers | undefined {
  if (Deno.build.os !== "linux") return undefined;
  try {
    return setUdpBuffers(typeof port === "function" ? port() : port, bytes);
  } catch (err) {
    if (!reported) {
      reported = true;
      try {
        report(
          `fly-vault: UDP buffers of the QUIC endpoint left at the kernel's default ` +
            `(${(err as Error)?.message ?? err}); bulk transfers may lose packets under bursts`,
        );
      } catch { /* a failing sink must not fail the endpoint */ }
    }
    return undefined;
  }
}
