/**
 * The batched UDP path: the relay's sockets are read with `recvmmsg` and written with
 * `sendmmsg` (libc through Deno FFI), up to {@link BATCH} datagrams per system call.
 *
 * Deno binds each socket and its reactor says when it is readable: one `receive` through the
 * event loop, with no thread hop, so a lone datagram is relayed as fast as on the JS path. Then
 * whatever else the kernel holds is read in batches straight from the same descriptor, on the
 * main thread, into one receive arena shared by every socket (an idle session holds no extra
 * buffer). Each datagram is handed to its socket's callback as a view into the arena, valid until
 * the callback returns, as {@link OnDatagram} promises. Sends are staged in a shared send arena
 * (a datagram relayed from the receive arena is not copied: its send points where it lies) and
 * flushed with one `sendmmsg` per run of datagrams to the same socket after each batch, before
 * the arena is read into again (or at the next microtask when sent from outside one). Under load a burst of 64 datagrams costs the
 * relay one promise and about three system calls instead of 64 promises and 128 calls.
 *
 * Measured against the alternatives (bench/proxy_bench.ts): waiting on an epoll set through a
 * nonblocking FFI call (Deno's thread pool) batched as well but added ~200 µs per round trip,
 * two thread wake-ups per hop; a Worker would add the same hop plus a copy across threads.
 *
 * A send the kernel refuses (EAGAIN: the socket's send buffer is full) is dropped, as UDP may,
 * and reported through `onError` (the proxy counts it in vault_proxy_errors_total): `send`
 * cannot say so itself, since the datagram leaves at the flush. A train of equal-sized
 * datagrams to one destination (a bulk transfer's packets) leaves as one GSO message
 * (UDP_SEGMENT): one trip down the stack for up to 64 datagrams, cut by the kernel or the NIC;
 * a kernel that refuses it turns GSO off for the process. UDP GRO on receive is not used: the
 * relay looks at every datagram in JS (session, counters), so a coalesced buffer would be cut up
 * again there; relaying GRO trains whole as GSO is the next step if capacity is ever short.
 *
 * Linux x86_64/aarch64 only (LP64 struct layouts); {@link mmsgAvailable} says whether this
 * process may use it (Linux, `--allow-ffi`, libc loadable); "auto" falls back to the JS path.
 *
 * @module
 */
import type { OnDatagram, UdpSocket } from "./udp.ts";

/** Datagrams per `recvmmsg` / `sendmmsg` call. */
export const BATCH = 64;
/** Bytes per receive slot: a larger datagram is cut to it, as on the JS path (QUIC stays ≤ 1452). */
const RECV_SLOT = 4096;
/** Staged sends at most; a full stage is flushed at once. */
const SEND_SLOTS = 512;
/** Bytes per send slot: the largest datagram the relay forwards (as the JS path's 4 KiB). */
const SEND_SLOT = 4096;
/** Batches read from one socket per wake, so one busy peer cannot starve the event loop. */
const BATCHES_PER_TURN = 8;
/** Kernel socket buffers asked for (forced as root, else capped by net.core.rmem_max / wmem_max). */
const FRONT_BUF = 4 << 20;
const UPSTREAM_BUF = 1 << 20;

const AF_INET = 2;
const AF_INET6 = 10;
const SOL_SOCKET = 1;
const SO_SNDBUF = 7;
const SO_RCVBUF = 8;
const SO_SNDBUFFORCE = 32;
const SO_RCVBUFFORCE = 33;
const MSG_DONTWAIT = 0x40;
const SOL_UDP = 17;
const UDP_SEGMENT = 103;
const EINTR = 4;
const EIO = 5;
const EAGAIN = 11;
const EINVAL = 22;
const ENOPROTOOPT = 92;
const EOPNOTSUPP = 95;
/** Datagrams per GSO send at most (the kernel's UDP_MAX_SEGMENTS), and its payload at most. */
const GSO_SEGMENTS = 64;
const GSO_BYTES = 65_000;
/** struct cmsghdr (16) + a u16, padded: CMSG_SPACE(2). */
const CMSG = 24;

/** struct mmsghdr (LP64): msghdr (56) + msg_len (4) + padding. */
const MMSG = 64;
/** struct sockaddr_in6 is 28 bytes; slots are 32 apart. */
const NAME = 32;

const SYMBOLS = {
  getsockname: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  recvmmsg: { parameters: ["i32", "pointer", "u32", "i32", "pointer"], result: "i32" },
  sendmmsg: { parameters: ["i32", "pointer", "u32", "i32"], result: "i32" },
  eventfd: { parameters: ["u32", "i32"], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
  strerror: { parameters: ["i32"], result: "pointer" },
} as const;

type Libc = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

/** True when this process can use the batched path (Linux, FFI permitted, libc loadable). */
export function mmsgAvailable(): boolean {
  if (Deno.build.os !== "linux") return false;
  if (Deno.build.arch !== "x86_64" && Deno.build.arch !== "aarch64") return false;
  try {
    if (Deno.permissions.querySync({ name: "ffi" }).state !== "granted") return false;
    const lib = Deno.dlopen("libc.so.6", { getpid: { parameters: [], result: "i32" } });
    lib.close();
    return true;
  } catch {
    return false;
  }
}

interface MmsgSocket {
  fd: number;
  on: OnDatagram;
  onError?: (err: unknown) => void;
  closed: boolean;
  /** Cache of the last source address formatted (a busy peer repeats). */
  lastName: Uint8Array;
  lastHost: string;
  lastPort: number;
  /** Cache of the last host text Deno gave, and its normal form. */
  denoHost: string;
  normHost: string;
  /** Cache of the last destination encoded. */
  destHost: string;
  destPort: number;
  dest: Uint8Array;
  v6: boolean;
}

/** libc and the arenas every socket of the process shares (all use is on the main thread). */
class Shared {
  readonly lib: Deno.DynamicLibrary<typeof SYMBOLS>;
  readonly c: Libc;
  readonly errno: Deno.UnsafePointerView;
  users = 0;
  // Receive arena: BATCH headers, names, iovecs and slots.
  readonly recvHdrView: DataView;
  readonly recvHdrPtr: Deno.PointerValue;
  readonly recvNames: Uint8Array;
  readonly recvData: Uint8Array;
  /** The receive arena's address, and views of its slots reused while a datagram's length repeats. */
  readonly recvBase: number;
  readonly recvViews: Uint8Array[] = [];
  /** True while drain() hands out views of the receive arena (sends may point into it). */
  draining = false;
  // Send arena.
  readonly sendHdrView: DataView;
  readonly sendHdrBase: bigint;
  readonly sendNames: Uint8Array;
  readonly sendData: Uint8Array;
  readonly sendDataBase: number;
  readonly sendIovView: DataView;
  readonly sendFds = new Int32Array(SEND_SLOTS);
  readonly sendLens = new Int32Array(SEND_SLOTS);
  readonly sendDests: (Uint8Array | undefined)[] = new Array(SEND_SLOTS);
  // GSO messages built over the staged slots at flush: one per train of equal datagrams.
  readonly gsoHdrView: DataView;
  readonly gsoHdrBase: bigint;
  readonly gsoCmsgView: DataView;
  readonly gsoCmsgBase: bigint;
  readonly sendNamesBase: bigint;
  readonly sendIovBase: bigint;
  readonly gsoFirst = new Int32Array(SEND_SLOTS);
  readonly gsoCount = new Int32Array(SEND_SLOTS);
  /** Cleared for good when the kernel refuses a segmented send (then plain batches only). */
  gso = true;
  readonly sendOwners: (MmsgSocket | undefined)[] = new Array(SEND_SLOTS);
  staged = 0;
  flushQueued = false;
  dispatching = false;
  /** Buffers whose addresses the kernel is given: kept reachable for as long as this lives. */
  readonly keep: Uint8Array[] = [];

  constructor() {
    this.lib = Deno.dlopen("libc.so.6", SYMBOLS);
    this.c = this.lib.symbols;
    this.errno = new Deno.UnsafePointerView(this.c.__errno_location()!);

    const recvHdr = this.alloc(BATCH * MMSG);
    this.recvHdrView = new DataView(recvHdr.buffer);
    this.recvHdrPtr = Deno.UnsafePointer.of(recvHdr);
    this.recvNames = this.alloc(BATCH * NAME);
    this.recvData = this.alloc(BATCH * RECV_SLOT);
    this.recvBase = Number(ptr(this.recvData));
    for (let i = 0; i < BATCH; i++) {
      this.recvViews.push(this.recvData.subarray(i * RECV_SLOT, i * RECV_SLOT));
    }
    const iov = this.alloc(BATCH * 16);
    const iovView = new DataView(iov.buffer);
    for (let i = 0; i < BATCH; i++) {
      iovView.setBigUint64(i * 16, ptr(this.recvData) + BigInt(i * RECV_SLOT), true);
      iovView.setBigUint64(i * 16 + 8, BigInt(RECV_SLOT), true);
      const h = i * MMSG;
      this.recvHdrView.setBigUint64(h, ptr(this.recvNames) + BigInt(i * NAME), true);
      this.recvHdrView.setUint32(h + 8, 28, true);
      this.recvHdrView.setBigUint64(h + 16, ptr(iov) + BigInt(i * 16), true);
      this.recvHdrView.setBigUint64(h + 24, 1n, true);
    }

    const sendHdr = this.alloc(SEND_SLOTS * MMSG);
    this.sendHdrView = new DataView(sendHdr.buffer);
    this.sendHdrBase = ptr(sendHdr);
    this.sendNames = this.alloc(SEND_SLOTS * NAME);
    this.sendData = this.alloc(SEND_SLOTS * SEND_SLOT);
    this.sendDataBase = Number(ptr(this.sendData));
    const siov = this.alloc(SEND_SLOTS * 16);
    this.sendIovView = new DataView(siov.buffer);
    for (let i = 0; i < SEND_SLOTS; i++) {
      this.sendIovView.setBigUint64(i * 16, ptr(this.sendData) + BigInt(i * SEND_SLOT), true);
      this.sendIovView.setBigUint64(i * 16 + 8, 0n, true);
      const h = i * MMSG;
      this.sendHdrView.setBigUint64(h, ptr(this.sendNames) + BigInt(i * NAME), true);
      this.sendHdrView.setBigUint64(h + 16, ptr(siov) + BigInt(i * 16), true);
      this.sendHdrView.setBigUint64(h + 24, 1n, true);
    }
    this.sendNamesBase = ptr(this.sendNames);
    this.sendIovBase = ptr(siov);
    const gsoHdr = this.alloc(SEND_SLOTS * MMSG);
    this.gsoHdrView = new DataView(gsoHdr.buffer);
    this.gsoHdrBase = ptr(gsoHdr);
    const cmsg = this.alloc(SEND_SLOTS * CMSG);
    this.gsoCmsgView = new DataView(cmsg.buffer);
    this.gsoCmsgBase = ptr(cmsg);
    for (let m = 0; m < SEND_SLOTS; m++) {
      this.gsoCmsgView.setBigUint64(m * CMSG, 18n, true); // CMSG_LEN(2)
      this.gsoCmsgView.setInt32(m * CMSG + 8, SOL_UDP, true);
      this.gsoCmsgView.setInt32(m * CMSG + 12, UDP_SEGMENT, true);
    }
  }

  alloc(n: number): Uint8Array {
    // Large enough that V8 keeps the bytes off its moving heap; kept so they outlive every call.
    const a = new Uint8Array(Math.max(n, 256));
    this.keep.push(a);
    return a;
  }

  error(what: string, code = this.errno.getInt32()): Error {
    const msg = Deno.UnsafePointerView.getCString(this.c.strerror(code)!);
    return new Error(`${what}: ${ERRNO_NAMES[code] ?? `errno ${code}`} (${msg})`);
  }

  /** Reads `s` until the kernel has nothing more (or a turn's worth), handing each datagram on. */
  drain(s: MmsgSocket) {
    const h = this.recvHdrView;
    for (let turn = 0; turn < BATCHES_PER_TURN && !s.closed; turn++) {
      const n = this.c.recvmmsg(s.fd, this.recvHdrPtr, BATCH, MSG_DONTWAIT, null);
      mmsgStats.recvCalls++;
      if (n < 0) {
        const e = this.errno.getInt32();
        if (e !== EAGAIN && e !== EINTR) s.onError?.(this.error("recvmmsg", e));
        return;
      }
      mmsgStats.recvDatagrams += n;
      this.dispatching = true;
      this.draining = true;
      try {
        for (let i = 0; i < n && !s.closed; i++) {
          const o = i * MMSG;
          // A datagram above RECV_SLOT comes cut to it (MSG_TRUNC), as Deno's receive cuts it to
          // its buffer on the JS path: QUIC's integrity check then rejects it at the peer.
          const len = h.getUint32(o + 56, true);
          decodeName(s, this.recvNames.subarray(i * NAME, i * NAME + 28));
          // A bulk transfer's datagrams share one length: its slot's view is reused, not remade.
          let view = this.recvViews[i];
          if (view.length !== len) {
            view = this.recvViews[i] = this.recvData.subarray(i * RECV_SLOT, i * RECV_SLOT + len);
          }
          try {
            s.on(view, s.lastHost, s.lastPort);
          } catch (err) {
            s.onError?.(err); // a bug in the handler is reported; the socket keeps serving
          }
        }
      } finally {
        this.dispatching = false;
        for (let i = 0; i < n; i++) h.setUint32(i * MMSG + 8, 28, true);
      }
      // Before the next recvmmsg overwrites the arena: staged sends may point into it.
      this.flush();
      this.draining = false;
      if (n < BATCH) return;
    }
  }

  stage(s: MmsgSocket, data: Uint8Array, host: string, port: number): boolean {
    if (data.length > SEND_SLOT) return false;
    if (this.staged >= SEND_SLOTS) this.flush();
    if (host !== s.destHost || port !== s.destPort) {
      const enc = encodeName(host, port, s.v6);
      if (!enc) return false;
      s.dest = enc;
      s.destHost = host;
      s.destPort = port;
    }
    const i = this.staged++;
    this.sendFds[i] = s.fd;
    this.sendOwners[i] = s;
    this.sendLens[i] = data.length;
    this.sendDests[i] = s.dest;
    this.sendNames.set(s.dest, i * NAME);
    // A datagram just read into the receive arena is sent from where it lies (drain flushes
    // before reading again); anything else is copied into this slot.
    let base: number;
    if (this.draining && data.buffer === this.recvData.buffer) {
      base = this.recvBase + data.byteOffset;
      mmsgStats.inPlaceSends++;
    } else {
      this.sendData.set(data, i * SEND_SLOT);
      base = this.sendDataBase + i * SEND_SLOT;
    }
    // Numbers, not BigInts, per datagram (addresses stay below 2^53); iov_len's high word stays 0.
    this.sendIovView.setUint32(i * 16, base % 0x1_0000_0000, true);
    this.sendIovView.setUint32(i * 16 + 4, Math.floor(base / 0x1_0000_0000), true);
    this.sendIovView.setUint32(i * 16 + 8, data.length, true);
    this.sendHdrView.setUint32(i * MMSG + 8, s.dest.length, true);
    if (!this.dispatching && !this.flushQueued) {
      this.flushQueued = true;
      queueMicrotask(() => {
        this.flushQueued = false;
        this.flush();
      });
    }
    return true;
  }

  /**
   * Sends what is staged: one sendmmsg per run of datagrams to the same socket; within it, a
   * train of equal-sized datagrams to one destination goes as one GSO message (UDP_SEGMENT),
   * which the kernel (or the NIC) cuts into datagrams after one trip down the stack.
   */
  flush() {
    const total = this.staged;
    if (total === 0) return;
    this.staged = 0;
    for (let i = 0; i < total;) {
      const fd = this.sendFds[i];
      const owner = this.sendOwners[i]!;
      let j = i + 1;
      while (j < total && this.sendFds[j] === fd) j++;
      if (!owner.closed) {
        if (this.gso && j - i > 1) this.sendSegmented(fd, owner, i, j);
        else this.sendPlain(fd, owner, i, j);
      }
      i = j;
    }
    this.sendOwners.fill(undefined, 0, total);
    this.sendDests.fill(undefined, 0, total);
  }

  sendPlain(fd: number, owner: MmsgSocket, from: number, to: number) {
    for (let at = from; at < to;) {
      const hdr = Deno.UnsafePointer.create(this.sendHdrBase + BigInt(at * MMSG));
      const sent = this.c.sendmmsg(fd, hdr, to - at, MSG_DONTWAIT);
      mmsgStats.sendCalls++;
      if (sent > 0) {
        mmsgStats.sendDatagrams += sent;
        at += sent;
        continue;
      }
      // The datagram at `at` cannot go (EAGAIN: the send buffer is full; or an ICMP error
      // queued on the socket): drop it, as UDP may, say so, and send the rest.
      const e = this.errno.getInt32();
      if (e !== EINTR) {
        owner.onError?.(this.error("sendmmsg", e));
        at++;
      }
    }
  }

  sendSegmented(fd: number, owner: MmsgSocket, from: number, to: number) {
    const h = this.gsoHdrView;
    let m = 0;
    for (let k = from; k < to; m++) {
      const size = this.sendLens[k];
      const dest = this.sendDests[k];
      let e = k + 1;
      let bytes = size;
      // Equal sizes to one destination; a shorter one may end the train (the kernel's rule).
      while (
        e < to && e - k < GSO_SEGMENTS && this.sendDests[e] === dest && size > 0 &&
        this.sendLens[e] > 0 && this.sendLens[e] <= size && bytes + this.sendLens[e] <= GSO_BYTES
      ) {
        bytes += this.sendLens[e++];
        if (this.sendLens[e - 1] < size) break;
      }
      const o = m * MMSG;
      h.setBigUint64(o, this.sendNamesBase + BigInt(k * NAME), true);
      h.setUint32(o + 8, dest!.length, true);
      h.setBigUint64(o + 16, this.sendIovBase + BigInt(k * 16), true);
      h.setUint32(o + 24, e - k, true);
      h.setUint32(o + 28, 0, true);
      if (e - k > 1) {
        this.gsoCmsgView.setUint16(m * CMSG + 16, size, true);
        h.setBigUint64(o + 32, this.gsoCmsgBase + BigInt(m * CMSG), true);
        h.setUint32(o + 40, CMSG, true);
      } else {
        h.setBigUint64(o + 32, 0n, true);
        h.setUint32(o + 40, 0, true);
      }
      h.setUint32(o + 44, 0, true);
      this.gsoFirst[m] = k;
      this.gsoCount[m] = e - k;
      k = e;
    }
    for (let at = 0; at < m;) {
      const hdr = Deno.UnsafePointer.create(this.gsoHdrBase + BigInt(at * MMSG));
      const sent = this.c.sendmmsg(fd, hdr, m - at, MSG_DONTWAIT);
      mmsgStats.sendCalls++;
      if (sent > 0) {
        for (let x = at; x < at + sent; x++) {
          mmsgStats.sendDatagrams += this.gsoCount[x];
          if (this.gsoCount[x] > 1) mmsgStats.gsoSends++;
        }
        at += sent;
        continue;
      }
      const e = this.errno.getInt32();
      if (e === EINTR) continue;
      const first = this.gsoFirst[at];
      const count = this.gsoCount[at];
      if (count > 1 && (e === EIO || e === EINVAL || e === ENOPROTOOPT || e === EOPNOTSUPP)) {
        // This kernel or device does not segment UDP: plain batches from now on.
        this.gso = false;
        this.sendPlain(fd, owner, first, first + count);
      } else owner.onError?.(this.error("sendmmsg", e));
      at++;
    }
  }

  /**
   * Sets a socket's receive and send buffers to `bytes`: forced past net.core.rmem_max and
   * wmem_max when root (CAP_NET_ADMIN; a Fly machine's default rmem_max is 208 KiB), else as far
   * as those caps allow.
   */
  setBuffers(fd: number, bytes: number) {
    const int = new Uint8Array(8);
    new DataView(int.buffer).setInt32(0, bytes, true);
    if (this.c.setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, int, 4) < 0) {
      this.c.setsockopt(fd, SOL_SOCKET, SO_RCVBUF, int, 4);
    }
    if (this.c.setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, int, 4) < 0) {
      this.c.setsockopt(fd, SOL_SOCKET, SO_SNDBUF, int, 4);
    }
  }

  /** The file descriptor of the socket Deno just bound at `port` of `family`, or -1. */
  findFd(guess: number, family: number, port: number): number {
    if (guess >= 0 && this.isOurs(guess, family, port)) return guess;
    // Another thread took the guessed descriptor first: look through them all (rare).
    for (const e of Deno.readDirSync("/proc/self/fd")) {
      const fd = Number(e.name);
      if (this.isOurs(fd, family, port)) return fd;
    }
    return -1;
  }

  isOurs(fd: number, family: number, port: number): boolean {
    const name = new Uint8Array(32);
    const len = new Uint8Array(8);
    new DataView(len.buffer).setUint32(0, 28, true);
    if (this.c.getsockname(fd, name, len) < 0) return false;
    return (name[0] | (name[1] << 8)) === family && ((name[2] << 8) | name[3]) === port;
  }
}

let shared: Shared | undefined;

/**
 * What the batched path has done in this process: datagrams read with recvmmsg and the calls
 * that read them, datagrams sent with sendmmsg and those calls. Tests check the path was taken;
 * the bench reports datagrams per call.
 */
export const mmsgStats = {
  recvCalls: 0,
  recvDatagrams: 0,
  sendCalls: 0,
  sendDatagrams: 0,
  /** Segmented (GSO) messages among the sends, each carrying 2 to 64 datagrams. */
  gsoSends: 0,
  /** Datagrams relayed straight from the receive arena, not copied into the send arena. */
  inPlaceSends: 0,
};

function ptr(a: Uint8Array): bigint {
  return BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(a)));
}

/**
 * Binds a UDP socket on `hostname:port` served by the batched path.
 *
 * Deno binds the socket and wakes the event loop when it is readable (its own receive, no
 * thread hop: a lone datagram goes through as fast as on the JS path); the rest of what the
 * kernel holds is then read with `recvmmsg` on the same descriptor (non-blocking, as Deno's
 * reactor set it), and sends go out with `sendmmsg`. Deno's edge-triggered readiness stays
 * correct: its next receive finds the socket empty, and re-arms.
 */
export function bindMmsg(
  hostname: string,
  port: number,
  on: OnDatagram,
  opts: MmsgOptions = {},
): Promise<UdpSocket> {
  try {
    return Promise.resolve(bind(hostname, port, on, opts));
  } catch (err) {
    return Promise.reject(err);
  }
}

/** Options of {@link bindMmsg}: as bindUdp's, and `upstream` for a smaller kernel buffer. */
export interface MmsgOptions {
  recvBuffer?: number;
  onError?: (err: unknown) => void;
  upstream?: boolean;
}

function bind(hostname: string, port: number, on: OnDatagram, opts: MmsgOptions): UdpSocket {
  const sh = shared ??= new Shared();
  sh.users++;
  let conn: Deno.DatagramConn | undefined;
  let fd = -1;
  try {
    // The lowest free descriptor now is the one socket() will take next, unless another thread
    // opens one in between (then findFd searches).
    const guess = sh.c.eventfd(0, 0);
    if (guess >= 0) sh.c.close(guess);
    conn = Deno.listenDatagram({ transport: "udp", hostname, port });
    const addr = conn.addr as Deno.NetAddr;
    const v6 = addr.hostname.includes(":");
    fd = sh.findFd(guess, v6 ? AF_INET6 : AF_INET, addr.port);
    if (fd < 0) throw new Error("cannot find the socket's descriptor for the batched path");
  } catch (err) {
    conn?.close();
    release();
    throw err;
  }
  const addr = conn.addr as Deno.NetAddr;
  const v6 = addr.hostname.includes(":");
  // Best effort: a burst waits in the kernel rather than being lost while the event loop is busy.
  sh.setBuffers(fd, opts.upstream ? UPSTREAM_BUF : FRONT_BUF);

  const s: MmsgSocket = {
    fd,
    on,
    onError: opts.onError,
    closed: false,
    lastName: new Uint8Array(28),
    lastHost: "",
    lastPort: -1,
    denoHost: "",
    normHost: "",
    destHost: "",
    destPort: -1,
    dest: new Uint8Array(0),
    v6,
  };
  const recvBuffer = opts.recvBuffer ?? 4096;
  const c = conn;
  const done = (async () => {
    let failures = 0;
    while (!s.closed) {
      let got: [Uint8Array, Deno.Addr];
      try {
        got = await c.receive(new Uint8Array(recvBuffer));
      } catch (err) {
        if (
          s.closed || err instanceof Deno.errors.BadResource ||
          err instanceof Deno.errors.Interrupted
        ) break;
        s.onError?.(err);
        if (++failures > 3) await new Promise((r) => setTimeout(r, Math.min(1000, failures * 10)));
        continue;
      }
      failures = 0;
      const a = got[1] as Deno.NetAddr;
      if (a.hostname !== s.denoHost) {
        s.denoHost = a.hostname;
        s.normHost = normalHost(a.hostname);
      }
      sh.dispatching = true;
      try {
        s.on(got[0], s.normHost, a.port);
      } catch (err) {
        s.onError?.(err);
      } finally {
        sh.dispatching = false;
      }
      // Whatever else is waiting comes in batches, without another trip through the event loop.
      if (!s.closed) sh.drain(s);
      sh.flush();
    }
    release();
  })();
  return {
    hostname: addr.hostname,
    port: addr.port,
    send(data, h, p) {
      if (s.closed) return false;
      return sh.stage(s, data, h, p);
    },
    close() {
      if (s.closed) return;
      sh.flush(); // what this socket staged goes out before its descriptor does
      s.closed = true;
      try {
        c.close();
      } catch {
        // already closed
      }
    },
    done,
  };
}

/**
 * Raises the kernel receive and send buffers of this process's UDP socket bound at `port` (one
 * not opened by bindMmsg, e.g. a QUIC endpoint's), so a burst waits in the kernel instead of
 * being lost. Returns the receive buffer the kernel granted (as root past net.core.rmem_max, else
 * capped by it), or undefined when no such socket was found.
 */
export function raiseUdpBuffers(port: number, bytes: number): number | undefined {
  const sh = shared ??= new Shared();
  sh.users++;
  try {
    for (const family of [AF_INET, AF_INET6]) {
      const fd = sh.findFd(-1, family, port);
      if (fd < 0) continue;
      sh.setBuffers(fd, bytes);
      const int = new Uint8Array(8);
      const len = new Uint8Array(8);
      new DataView(len.buffer).setUint32(0, 4, true);
      sh.c.getsockopt(fd, SOL_SOCKET, SO_RCVBUF, int, len);
      return new DataView(int.buffer).getInt32(0, true);
    }
    return undefined;
  } finally {
    release();
  }
}

/** Drops the shared libc handle once no socket uses it. */
function release() {
  if (!shared || --shared.users > 0) return;
  shared.lib.close();
  shared = undefined;
}

/** Deno's text of an address, in the form {@link decodeName} gives (one session key per peer). */
function normalHost(h: string): string {
  if (!h.includes(":")) return h;
  const ip = parseIP(h);
  return ip ? formatIPv6(ip.v6) : h;
}

/** Formats the sockaddr in `name` into `s.lastHost`/`s.lastPort`, reusing the last string. */
function decodeName(s: MmsgSocket, name: Uint8Array) {
  const family = name[0] | (name[1] << 8);
  const port = (name[2] << 8) | name[3];
  const last = s.lastName;
  if (port === s.lastPort) {
    let same = true;
    const end = family === AF_INET ? 8 : 24;
    for (let k = 0; k < end; k++) {
      if (last[k] !== name[k]) {
        same = false;
        break;
      }
    }
    if (same) return;
  }
  last.set(name);
  s.lastPort = port;
  if (family === AF_INET) {
    s.lastHost = `${name[4]}.${name[5]}.${name[6]}.${name[7]}`;
    return;
  }
  s.lastHost = formatIPv6(name.subarray(8, 24));
}

/** RFC 5952 text of a 16-byte IPv6 address; v4-mapped as ::ffff:a.b.c.d (as node:dgram). */
export function formatIPv6(b: Uint8Array): string {
  let mapped = b[10] === 0xff && b[11] === 0xff;
  for (let k = 0; k < 10 && mapped; k++) if (b[k] !== 0) mapped = false;
  if (mapped) return `::ffff:${b[12]}.${b[13]}.${b[14]}.${b[15]}`;
  const g: number[] = [];
  for (let k = 0; k < 16; k += 2) g.push((b[k] << 8) | b[k + 1]);
  // The longest run of two or more zero groups (first one on a tie) becomes "::".
  let bestAt = -1, bestLen = 0;
  for (let k = 0; k < 8;) {
    if (g[k] !== 0) {
      k++;
      continue;
    }
    let e = k;
    while (e < 8 && g[e] === 0) e++;
    if (e - k > bestLen && e - k >= 2) {
      bestAt = k;
      bestLen = e - k;
    }
    k = e;
  }
  const hex = (xs: number[]) => xs.map((x) => x.toString(16)).join(":");
  if (bestAt < 0) return hex(g);
  return `${hex(g.slice(0, bestAt))}::${hex(g.slice(bestAt + bestLen))}`;
}

/** Parses an IPv4 or IPv6 literal into 16 bytes (v4 as v4-mapped), or undefined. */
export function parseIP(host: string): { v4?: Uint8Array; v6: Uint8Array } | undefined {
  const v4 = parseIPv4(host);
  if (v4) {
    const v6 = new Uint8Array(16);
    v6[10] = 0xff;
    v6[11] = 0xff;
    v6.set(v4, 12);
    return { v4, v6 };
  }
  const pct = host.indexOf("%");
  const h = pct >= 0 ? host.slice(0, pct) : host;
  if (!h.includes(":")) return undefined;
  const parts = h.split("::");
  if (parts.length > 2) return undefined;
  const groups = (p: string): number[] | undefined => {
    if (p === "") return [];
    const out: number[] = [];
    const xs = p.split(":");
    for (let k = 0; k < xs.length; k++) {
      const x = xs[k];
      if (k === xs.length - 1 && x.includes(".")) {
        const q = parseIPv4(x);
        if (!q) return undefined;
        out.push((q[0] << 8) | q[1], (q[2] << 8) | q[3]);
      } else {
        if (!/^[0-9a-fA-F]{1,4}$/.test(x)) return undefined;
        out.push(parseInt(x, 16));
      }
    }
    return out;
  };
  const head = groups(parts[0]);
  const tail = parts.length === 2 ? groups(parts[1]) : [];
  if (!head || !tail) return undefined;
  const fill = parts.length === 2 ? 8 - head.length - tail.length : 0;
  if (fill < 0 || (parts.length === 1 && head.length !== 8) || (parts.length === 2 && fill < 1)) {
    return undefined;
  }
  const all = [...head, ...new Array(fill).fill(0), ...tail];
  const v6 = new Uint8Array(16);
  all.forEach((x, k) => {
    v6[k * 2] = x >> 8;
    v6[k * 2 + 1] = x & 0xff;
  });
  return { v6 };
}

function parseIPv4(h: string): Uint8Array | undefined {
  const xs = h.split(".");
  if (xs.length !== 4) return undefined;
  const out = new Uint8Array(4);
  for (let k = 0; k < 4; k++) {
    if (!/^\d{1,3}$/.test(xs[k])) return undefined;
    const n = Number(xs[k]);
    if (n > 255) return undefined;
    out[k] = n;
  }
  return out;
}

/** A sockaddr_in (16 bytes) or sockaddr_in6 (28 bytes) for a socket of that family. */
function encodeName(host: string, port: number, v6: boolean): Uint8Array | undefined {
  const ip = parseIP(host);
  if (!ip || !Number.isInteger(port) || port < 0 || port > 65535) return undefined;
  if (!v6) {
    if (!ip.v4) return undefined;
    const a = new Uint8Array(16);
    a[0] = AF_INET;
    a[2] = port >> 8;
    a[3] = port & 0xff;
    a.set(ip.v4, 4);
    return a;
  }
  const a = new Uint8Array(28);
  a[0] = AF_INET6;
  a[2] = port >> 8;
  a[3] = port & 0xff;
  a.set(ip.v6, 8);
  return a;
}

const ERRNO_NAMES: Record<number, string> = {
  1: "EPERM",
  4: "EINTR",
  11: "EAGAIN",
  12: "ENOMEM",
  13: "EACCES",
  22: "EINVAL",
  23: "ENFILE",
  24: "EMFILE",
  90: "EMSGSIZE",
  97: "EAFNOSUPPORT",
  98: "EADDRINUSE",
  99: "EADDRNOTAVAIL",
  101: "ENETUNREACH",
  105: "ENOBUFS",
  111: "ECONNREFUSED",
  113: "EHOSTUNREACH",
};
