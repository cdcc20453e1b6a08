/**
 * An emulated WAN link between two network namespaces, for the WAN bench and
 * its test. The kernel here has no `netem`, so the link is `linkem.c`: a
 * small C program that opens two TUN devices and carries every IP packet
 * between them through a loss / rate (bounded drop-tail queue) / delay
 * (+ jitter, FIFO) stage per direction. It is compiled on first use with the
 * machine's `cc` and cached by the source's hash.
 *
 * Why C and not Deno FFI (measured here, 2026-12-02, iperf3 TCP through two TUN devices, no
 * shaping): a Deno FFI relay (`read` as a `nonblocking` FFI call on the thread pool, `write`
 * synchronous) carried 208 Mbit/s using a whole core, before any delay queue or timers; the C
 * relay carried 1.4-3.4 Gbit/s for the same CPU. Shaped to the `wan` profile it holds
 * 200 Mbit/s (UDP offered at 300: 194 Mbit/s of payload arrives) for about a third of a core,
 * and pings measure 40.2-40.6 ms for a 40 ms profile.
 *
 * Topology: namespace `C` (client, 10.77.0.1) ── tun ─ linkem ─ tun ── namespace
 * `S` (server, 10.77.0.2). Each namespace has only its loopback and its TUN
 * device, so nothing can leave the two namespaces. Names start with
 * `fvbench-PID-`, so a later run sweeps what a crashed run left behind
 * (namespaces whose PID is gone) without touching a parallel run's.
 *
 * @module
 */
import { join } from "node:path";
import { VaultError } from "../../src/errors/mod.ts";

/** A link's shaping, per direction (delay is one way: half the RTT). */
export interface LinkProfile {
  name: string;
  /** Round-trip time the profile stands for, ms. */
  rttMs: number;
  /** ± jitter on the RTT, ms (each direction gets ± half of it, uniform, no reordering). */
  jitterMs: number;
  /** Packet loss per direction, a fraction (0.001 = 0.1%). */
  loss: number;
  /** Bottleneck rate per direction, Mbit/s; 0 = not shaped. */
  rateMbit: number;
  /** Queue ahead of the bottleneck, in ms of transmission; a packet that would wait longer is dropped. */
  queueMs: number;
}

/** The profiles of issue 10. Queues hold 50 ms (a modest router buffer; 100 ms on the cell link). */
export const PROFILES: Record<string, LinkProfile> = {
  lan: { name: "lan", rttMs: 0, jitterMs: 0, loss: 0, rateMbit: 0, queueMs: 0 },
  wan: { name: "wan", rttMs: 40, jitterMs: 0, loss: 0.001, rateMbit: 200, queueMs: 50 },
  lossy: { name: "lossy", rttMs: 80, jitterMs: 0, loss: 0.02, rateMbit: 50, queueMs: 50 },
  cell: { name: "cell", rttMs: 120, jitterMs: 30, loss: 0.01, rateMbit: 20, queueMs: 100 },
};

/** Counters for one direction of the link, from linkem. */
export interface DirectionStats {
  rx_packets: number;
  rx_bytes: number;
  tx_packets: number;
  tx_bytes: number;
  /** Dropped by the random loss. */
  lost: number;
  /** Dropped because the queue was full (or the far device's was). */
  dropped: number;
  queued_max: number;
}

/** What the link carried, and the emulator's CPU time (user + system, s). */
export interface LinkStats {
  client_to_server: DirectionStats;
  server_to_client: DirectionStats;
  cpu_s: number;
}

/** A running link between two fresh namespaces. */
export interface Link {
  profile: LinkProfile;
  /** Client-side namespace (address `clientIp`). */
  clientNs: string;
  /** Server-side namespace (address `serverIp`). */
  serverNs: string;
  clientIp: string;
  serverIp: string;
  /** `argv` prefixed to run in namespace `ns`. */
  inNs(ns: string, argv: string[]): string[];
  /** Stops the emulator and removes both namespaces (killing what still runs in them). */
  close(): Promise<LinkStats>;
}

export const NS_PREFIX = "fvbench-";
const CLIENT_IP = "10.77.0.1";
const SERVER_IP = "10.77.0.2";

async function run(cmd: string, args: string[], allowFail = false): Promise<string> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  const err = new TextDecoder().decode(out.stderr).trim();
  if (!out.success && !allowFail) {
    throw new VaultError("linkem.setup", `${cmd} ${args.join(" ")}: ${err}`, "run as root");
  }
  return new TextDecoder().decode(out.stdout);
}

let built: Promise<string> | undefined;

/** Compiles linkem.c once (cached in the temp dir by the source's hash); returns the binary. */
export function linkemBinary(): Promise<string> {
  return built ??= (async () => {
    const src = new URL("./linkem.c", import.meta.url).pathname;
    const text = await Deno.readFile(src);
    const hash = Array.from(new Uint8Array(await crypto.subtle.digest("SHA-256", text)))
      .slice(0, 8).map((b) => b.toString(16).padStart(2, "0")).join("");
    const dir = join(Deno.env.get("TMPDIR") ?? "/tmp", "fv-linkem");
    const bin = join(dir, `linkem-${hash}`);
    if (await Deno.stat(bin).then(() => true, () => false)) return bin;
    await Deno.mkdir(dir, { recursive: true });
    const tmp = `${bin}.${Deno.pid}`;
    await run("cc", ["-O2", "-Wall", "-o", tmp, src]);
    await Deno.rename(tmp, bin);
    return bin;
  })();
}

function alive(pid: number): boolean {
  try {
    Deno.statSync(`/proc/${pid}`);
    return true;
  } catch {
    return false;
  }
}

/** Processes inside namespace `ns`. */
async function pidsIn(ns: string): Promise<number[]> {
  const out = await run("ip", ["netns", "pids", ns], true);
  return out.split(/\s+/).filter(Boolean).map(Number);
}

/** Deletes a namespace, first killing what runs in it (all of it was started in it by us). */
async function removeNs(ns: string): Promise<void> {
  for (const pid of await pidsIn(ns)) {
    try {
      Deno.kill(pid, "SIGKILL");
    } catch { /* already gone */ }
  }
  await run("ip", ["netns", "del", ns], true);
}

/** Our namespaces now present (all runs). */
export async function listOurNamespaces(): Promise<string[]> {
  const out = await run("ip", ["netns", "list"], true);
  return out.split("\n").map((l) => l.split(" ")[0]).filter((n) => n.startsWith(NS_PREFIX));
}

/** Removes namespaces left by runs whose process is gone (a crash, a kill -9). */
export async function sweepStale(): Promise<string[]> {
  const swept: string[] = [];
  for (const ns of await listOurNamespaces()) {
    const pid = Number(ns.slice(NS_PREFIX.length).split("-")[0]);
    if (Number.isInteger(pid) && pid > 0 && !alive(pid)) {
      await removeNs(ns);
      swept.push(ns);
    }
  }
  return swept;
}

let seq = 0;
const open = new Set<Link>();
let exitHooked = false;

function hookExit() {
  if (exitHooked) return;
  exitHooked = true;
  // Ctrl-C on a bench still removes the namespaces (a crash is swept by the next run).
  for (const sig of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(sig, async () => {
      await Promise.allSettled([...open].map((l) => l.close()));
      Deno.exit(130);
    });
  }
}

/** Linkem's arguments for a profile. */
export function linkemArgs(p: LinkProfile, seed: number): string[] {
  return [
    "--delay-ms",
    String(p.rttMs / 2),
    "--jitter-ms",
    String(p.jitterMs / 2),
    "--loss",
    String(p.loss),
    "--rate-mbit",
    String(p.rateMbit),
    "--queue-ms",
    String(p.queueMs),
    "--seed",
    String(seed),
  ];
}

/**
 * Creates two namespaces joined by an emulated link shaped as `profile`.
 * Always `close()` it (a `try/finally`); SIGINT/SIGTERM close it too.
 */
export async function startLink(
  profile: LinkProfile | string,
  opts: { seed?: number } = {},
): Promise<Link> {
  const p = typeof profile === "string" ? PROFILES[profile] : profile;
  if (!p) {
    throw new VaultError(
      "linkem.profile",
      `no link profile ${profile}`,
      `one of ${Object.keys(PROFILES).join(", ")}`,
    );
  }
  if (Deno.uid() !== 0) {
    throw new VaultError("linkem.root", "the link emulator needs root", "run it as root");
  }
  await sweepStale();
  const bin = await linkemBinary();
  const n = ++seq;
  const clientNs = `${NS_PREFIX}${Deno.pid}-${n}-c`;
  const serverNs = `${NS_PREFIX}${Deno.pid}-${n}-s`;
  // TUN names live in the root namespace until moved: unique per process and link (≤ 15 chars).
  const tag = `${Deno.pid % 1_000_000}${String.fromCharCode(96 + (n % 26 || 26))}`;
  const tunC = `fvc${tag}`;
  const tunS = `fvs${tag}`;
  const made: string[] = [];
  let emu: Deno.ChildProcess | undefined;
  const cleanup = async () => {
    await Promise.all(made.map(removeNs));
  };
  try {
    for (const ns of [clientNs, serverNs]) {
      await run("ip", ["netns", "add", ns]);
      made.push(ns);
      await run("ip", ["-n", ns, "link", "set", "lo", "up"]);
    }
    emu = new Deno.Command(bin, {
      args: [tunC, tunS, ...linkemArgs(p, opts.seed ?? 1)],
      stdin: "piped", // the lifeline: linkem exits when we do
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const lines = emu.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let head = "";
    while (!head.includes("\n")) {
      const { value, done } = await lines.read();
      if (done) throw new VaultError("linkem.setup", "linkem exited before it was ready", "");
      head += value;
    }
    let rest = head.slice(head.indexOf("\n") + 1);
    const tail = (async () => {
      while (true) {
        const { value, done } = await lines.read();
        if (done) return rest;
        rest += value;
      }
    })();
    for (
      const [dev, ns, ip, peer] of [[tunC, clientNs, CLIENT_IP, SERVER_IP], [
        tunS,
        serverNs,
        SERVER_IP,
        CLIENT_IP,
      ]]
    ) {
      await run("ip", ["link", "set", dev, "netns", ns]);
      await run("ip", ["-n", ns, "addr", "add", ip, "peer", peer, "dev", dev]);
      await run("ip", ["-n", ns, "link", "set", dev, "up"]);
    }
    const child = emu;
    const writer = child.stdin.getWriter();
    let closed: ReturnType<Link["close"]> | undefined;
    const link: Link = {
      profile: p,
      clientNs,
      serverNs,
      clientIp: CLIENT_IP,
      serverIp: SERVER_IP,
      inNs: (ns, argv) => ["ip", "netns", "exec", ns, ...argv],
      close() {
        return closed ??= (async () => {
          open.delete(link);
          await writer.close().catch(() => {});
          await child.status;
          const text = (await tail).trim();
          await cleanup();
          const s = JSON.parse(text || "{}");
          return { client_to_server: s.a_to_b, server_to_client: s.b_to_a, cpu_s: s.cpu_s };
        })();
      },
    };
    open.add(link);
    hookExit();
    return link;
  } catch (err) {
    if (emu) {
      try {
        emu.kill("SIGKILL");
      } catch { /* gone */ }
      await emu.status;
    }
    await cleanup();
    throw err;
  }
}
