/**
 * Hears "port unreachable" as ssh hears "Connection refused". Deno's QUIC
 * client does not report the ICMP error a closed UDP port answers with (a
 * dial to one just waits out its deadline), so beside each dial we send a
 * one-byte datagram from a connected UDP socket of our own: the kernel turns
 * the ICMP reply into ECONNREFUSED on that socket. The probe never delays a
 * dial; its verdict only ends a dial early. Numeric addresses only (a name is
 * resolved by the QUIC dial itself); where FFI or the socket is unavailable
 * the probe simply says nothing.
 *
 * @module
 */

const AF_INET = 2, AF_INET6 = 10, SOCK_DGRAM = 2, SOCK_NONBLOCK = 0o4000, SOCK_CLOEXEC = 0o2000000;
const SOL_SOCKET = 1, SO_ERROR = 4, ECONNREFUSED = 111;
/** When the probe is sent again (ms after the dial starts): one lost datagram or rate-limited ICMP is not the end. */
const RESEND_AT_MS = [0, 150, 500, 1500];
const CHECK_EVERY_MS = 10;
const GIVE_UP_MS = 3000;

type Libc = Deno.DynamicLibrary<{
  socket: { parameters: ["i32", "i32", "i32"]; result: "i32" };
  connect: { parameters: ["i32", "buffer", "u32"]; result: "i32" };
  send: { parameters: ["i32", "buffer", "usize", "i32"]; result: "isize" };
  getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"]; result: "i32" };
  close: { parameters: ["i32"]; result: "i32" };
}>;

let libc: Libc | null | undefined;
function open(): Libc | null {
  if (libc !== undefined) return libc;
  try {
    libc = Deno.dlopen("libc.so.6", {
      socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
      connect: { parameters: ["i32", "buffer", "u32"], result: "i32" },
      send: { parameters: ["i32", "buffer", "usize", "i32"], result: "isize" },
      getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
      close: { parameters: ["i32"], result: "i32" },
    });
  } catch {
    libc = null;
  }
  return libc;
}

function ipv4(s: string): Uint8Array | null {
  const parts = s.split(".");
  if (parts.length !== 4 || parts.some((p) => !/^\d{1,3}$/.test(p) || Number(p) > 255)) return null;
  return Uint8Array.from(parts.map(Number));
}

function ipv6(s: string): Uint8Array | null {
  if (s.includes("%") || !/^[0-9a-fA-F:.]+$/.test(s)) return null;
  const halves = s.split("::");
  if (halves.length > 2) return null;
  const groups = (h: string): number[] | null => {
    if (h === "") return [];
    const out: number[] = [];
    for (const g of h.split(":")) {
      const v4 = g.includes(".") ? ipv4(g) : null;
      if (v4) out.push((v4[0] << 8) | v4[1], (v4[2] << 8) | v4[3]);
      else if (/^[0-9a-fA-F]{1,4}$/.test(g)) out.push(parseInt(g, 16));
      else return null;
    }
    return out;
  };
  const head = groups(halves[0]), tail = halves.length === 2 ? groups(halves[1]) : [];
  if (!head || !tail) return null;
  const fill = 8 - head.length - tail.length;
  if (halves.length === 1 ? fill !== 0 : fill < 1) return null;
  const all = [...head, ...new Array(halves.length === 2 ? fill : 0).fill(0), ...tail];
  const bytes = new Uint8Array(16);
  all.forEach((g, i) => [bytes[2 * i], bytes[2 * i + 1]] = [g >> 8, g & 0xff]);
  return bytes;
}

/** The sockaddr for a numeric `hostname`, or null for a name. */
export function sockaddrOf(
  hostname: string,
  port: number,
): { family: number; addr: Uint8Array } | null {
  const v4 = ipv4(hostname);
  if (v4) {
    const sa = new Uint8Array(16);
    new DataView(sa.buffer).setUint16(0, AF_INET, true);
    new DataView(sa.buffer).setUint16(2, port, false);
    sa.set(v4, 4);
    return { family: AF_INET, addr: sa };
  }
  const v6 = ipv6(hostname);
  if (v6) {
    const sa = new Uint8Array(28);
    new DataView(sa.buffer).setUint16(0, AF_INET6, true);
    new DataView(sa.buffer).setUint16(2, port, false);
    sa.set(v6, 8);
    return { family: AF_INET6, addr: sa };
  }
  return null;
}

/** A running probe: `refused` resolves true when the port is known closed (never rejects). */
export interface RefusedProbe {
  refused: Promise<boolean>;
  stop(): void;
}

/** Starts probing `hostname:port`; stop it once the dial is settled. */
export function probeRefused(hostname: string, port: number): RefusedProbe {
  const none: RefusedProbe = { refused: new Promise<boolean>(() => {}), stop() {} };
  const sa = sockaddrOf(hostname, port);
  const lib = sa && open();
  if (!sa || !lib) return none;
  const fd = lib.symbols.socket(sa.family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return none;
  if (lib.symbols.connect(fd, sa.addr, sa.addr.length) !== 0) {
    lib.symbols.close(fd);
    return none;
  }
  const byte = new Uint8Array([0]);
  const err = new Uint8Array(4), len = new Uint8Array(4);
  const started = performance.now();
  let next = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let closed = false;
  let settle: (v: boolean) => void = () => {};
  const refused = new Promise<boolean>((resolve) => settle = resolve);
  const stop = () => {
    if (closed) return;
    closed = true;
    clearTimeout(timer);
    lib.symbols.close(fd);
  };
  const tick = () => {
    if (closed) return;
    new DataView(len.buffer).setUint32(0, 4, true);
    // SO_ERROR reads and clears the pending error the ICMP reply left on the socket.
    if (lib.symbols.getsockopt(fd, SOL_SOCKET, SO_ERROR, err, len) === 0) {
      const e = new DataView(err.buffer).getInt32(0, true);
      if (e === ECONNREFUSED) {
        stop();
        settle(true);
        return;
      }
    }
    const elapsed = performance.now() - started;
    if (elapsed > GIVE_UP_MS) return stop();
    while (next < RESEND_AT_MS.length && elapsed >= RESEND_AT_MS[next]) {
      lib.symbols.send(fd, byte, 1n, 0);
      next++;
    }
    const t = setTimeout(tick, CHECK_EVERY_MS);
    // The probe must never keep a finished program alive.
    Deno.unrefTimer(t);
    timer = t;
  };
  tick();
  return { refused, stop };
}
