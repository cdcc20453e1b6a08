/**
 * vault-proxy against the direct path, same run (issue 6 and 11 targets: bulk
 * throughput ≥ 0.9× direct, added RTT p50 ≤ 100 µs), for each UDP
 * implementation (mmsg: the batched path; deno and node: one datagram per
 * call); the relay's capacity in datagrams per second (a blaster through one
 * session into a sink); then memory for 10,000 idle sessions. Client, proxy
 * and servers are separate processes. Direct and proxied bulk runs alternate
 * (medians of --rounds) so a neighbour's load spike on this shared machine
 * hits both sides alike. Prints one JSON object.
 *
 *   npx deno run -A bench/proxy_bench.ts [--mib 64] [--rounds 3] [--pings 2000]
 *     [--capacity-ms 3000] [--blasters 1] [--sessions 10000] [--impls mmsg,deno,node]
 *     [--endpoint-buffers transport|kernel|BYTES] [--client-buffers transport|kernel|BYTES]
 *     [--proxy-nice 0]
 *
 * The QUIC endpoints are fly-vault's own: init's listenQuic, and a client dialling with dialQuic's
 * options (BBR) and socket tuning (bench/proxy_endpoint.ts). `--endpoint-buffers kernel` puts
 * both endpoints' UDP buffers back to the kernel's default, as before src/transport tuned them.
 */
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { clientHello, clientInitials } from "../src/proxy/testutil.ts";
import { StreamTag } from "../src/protocol/mod.ts";
import { dialEndpoint } from "./proxy_endpoint.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    mib: { type: "string", default: "64" },
    pings: { type: "string", default: "2000" },
    sessions: { type: "string", default: "10000" },
    impls: { type: "string", default: "mmsg,deno,node" },
    rounds: { type: "string", default: "5" },
    "capacity-ms": { type: "string", default: "3000" },
    "datagram": { type: "string", default: "1200" },
    blasters: { type: "string", default: "1" },
    "endpoint-buffers": { type: "string", default: "transport" },
    // The client's alone (default: as the server's). A client not run as root gets at most
    // net.core.rmem_max, often the 208 KiB default on a desktop: "kernel" stands for it.
    "client-buffers": { type: "string" },
    // The relay's scheduling priority for the bulk runs (nice, negative: ahead of the endpoints).
    // A relay host of its own never waits for a core behind the endpoints; this box's two cores
    // are shared by client, server and relay, and a relay that waits holds a standing queue.
    "proxy-nice": { type: "string", default: "0" },
  },
});
const IMPLS = values.impls.split(",");
const ROUNDS = Number(values.rounds);
const CAPACITY_MS = Number(values["capacity-ms"]);
const DATAGRAM = Number(values.datagram);
const BLASTERS = Number(values.blasters);
const MIB = Number(values.mib);
const PROXY_NICE = Number(values["proxy-nice"]);
const PINGS = Number(values.pings);
const SESSIONS = Number(values.sessions);
const CHILD = fileURLToPath(new URL("./proxy_child.ts", import.meta.url));
const MACHINE = "be0c4b0c4b0c4b";

interface Child {
  proc: Deno.ChildProcess;
  first: Record<string, unknown>;
  ask(what?: string): Promise<Record<string, unknown>>;
}

async function spawn(args: string[], nice = 0): Promise<Child> {
  const argv = [Deno.execPath(), "run", "-A", "--quiet", "--v8-flags=--expose-gc", CHILD, ...args];
  if (nice !== 0) argv.unshift("nice", "-n", String(nice));
  const proc = new Deno.Command(argv[0], {
    args: argv.slice(1),
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = proc.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  const line = async () => {
    while (!buf.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) throw new Error("child exited");
      buf += value;
    }
    const i = buf.indexOf("\n");
    const l = buf.slice(0, i);
    buf = buf.slice(i + 1);
    return JSON.parse(l);
  };
  const writer = proc.stdin.getWriter();
  const first = await line();
  return {
    proc,
    first,
    async ask(what = "?") {
      await writer.write(new TextEncoder().encode(`${what}\n`));
      return line();
    },
  };
}

/** A host-wide UDP counter of /proc/net/snmp; other processes add to it too. */
function udpCounter(name: string): number {
  const lines = Deno.readTextFileSync("/proc/net/snmp").split("\n").filter((l) =>
    l.startsWith("Udp:")
  );
  const [names, vals] = lines.map((l) => l.split(/\s+/));
  return Number(vals[names.indexOf(name)]);
}
/** Host-wide UDP receive-buffer overflows (loopback loss). */
const rcvbufErrors = () => udpCounter("RcvbufErrors");
/** Host-wide UDP sends refused for a full send buffer. */
const sndbufErrors = () => udpCounter("SndbufErrors");

/** Datagrams dropped at sockets bound to `port` (their receive buffer was full), from /proc/net/udp. */
function socketDrops(port: number): number {
  let n = 0;
  for (const l of Deno.readTextFileSync("/proc/net/udp").split("\n").slice(1)) {
    const f = l.trim().split(/\s+/);
    if (f.length > 5 && parseInt(f[1].split(":")[1], 16) === port) n += Number(f[f.length - 1]);
  }
  return n;
}

type MmsgStats = Record<string, number> | undefined;
/** The batched path's datagrams per system call over the run (absent on the other paths). */
function mmsgPerCall(a: unknown, b: unknown): Record<string, number> {
  const [x, y] = [a as MmsgStats, b as MmsgStats];
  if (!x || !y || y.recvCalls === x.recvCalls) return {};
  const d = (k: string) => y[k] - x[k];
  return {
    recv_per_call: Math.round((d("recvDatagrams") / d("recvCalls")) * 10) / 10,
    send_per_call: Math.round((d("sendDatagrams") / Math.max(1, d("sendCalls"))) * 10) / 10,
    gso_sends: d("gsoSends"),
  };
}

/** CPU seconds (user + system) of a process, "self" for this one. */
function cpuOf(pid: number | "self"): number {
  const f = Deno.readTextFileSync(`/proc/${pid}/stat`).split(") ")[1].split(" ");
  return (Number(f[11]) + Number(f[12])) / 100; // utime, stime in clock ticks (USER_HZ 100)
}

function rssKiB(pid: number): number {
  const m = Deno.readTextFileSync(`/proc/${pid}/status`).match(/VmRSS:\s+(\d+)/);
  return Number(m![1]);
}

/** A stream to the echo server: its tag byte first, as init's listener expects. */
async function stream(conn: Deno.QuicConn) {
  const s = await conn.createBidirectionalStream();
  const w = s.writable.getWriter();
  await w.write(new Uint8Array([StreamTag.exec]));
  return { s, w };
}

async function bulk(conn: Deno.QuicConn, bytes: number): Promise<number> {
  const { s, w } = await stream(conn);
  const chunk = new Uint8Array(64 * 1024).fill(7);
  const t0 = performance.now();
  const writing = (async () => {
    for (let sent = 0; sent < bytes; sent += chunk.length) await w.write(chunk);
    await w.close();
  })();
  writing.catch(() => {}); // if the connection is lost, the read below says so
  let got = 0;
  for await (const c of s.readable) got += c.length;
  await writing;
  const secs = (performance.now() - t0) / 1000;
  if (got !== bytes) throw new Error(`echoed ${got} of ${bytes}`);
  return bytes / secs / 2 ** 20; // MiB/s each way
}

async function rtts(conn: Deno.QuicConn, n: number): Promise<number[]> {
  const { s, w } = await stream(conn);
  const r = s.readable.getReader({ mode: "byob" });
  const msg = new Uint8Array(32).fill(1);
  const out: number[] = [];
  for (let i = 0; i < n + 50; i++) {
    const t0 = performance.now();
    await w.write(msg);
    let have = 0;
    while (have < 32) {
      const { value, done } = await r.read(new Uint8Array(32 - have));
      if (done) throw new Error("stream ended");
      have += value.length;
    }
    if (i >= 50) out.push((performance.now() - t0) * 1000); // µs, after warm-up
  }
  await w.close();
  return out;
}

/** Bytes waiting in each UDP socket's receive queue now, by local port (/proc/net/udp{,6}). */
function rxQueues(): Map<number, number> {
  const q = new Map<number, number>();
  for (const f of ["/proc/net/udp", "/proc/net/udp6"]) {
    for (const l of Deno.readTextFileSync(f).split("\n").slice(1)) {
      const x = l.trim().split(/\s+/);
      if (x.length < 5) continue;
      const port = parseInt(x[1].split(":").at(-1)!, 16);
      q.set(port, (q.get(port) ?? 0) + parseInt(x[4].split(":")[1], 16));
    }
  }
  return q;
}

/**
 * Where a transfer's data waits: the mean receive queue (KiB) of each socket of interest,
 * sampled every 10 ms while `run` runs. The socket whose reader is the bottleneck holds the
 * standing queue.
 */
async function queuesDuring<T>(
  ports: Record<string, number>,
  run: () => Promise<T>,
): Promise<{ value: T; queues_kib: Record<string, number> }> {
  const sums: Record<string, number> = {};
  let samples = 0;
  const timer = setInterval(() => {
    const q = rxQueues();
    samples++;
    for (const [name, port] of Object.entries(ports)) {
      sums[name] = (sums[name] ?? 0) + (port < 0 ? 0 : q.get(port) ?? 0);
    }
  }, 10);
  try {
    const value = await run();
    const queues_kib: Record<string, number> = {};
    for (const [name, sum] of Object.entries(sums)) {
      queues_kib[name] = Math.round(sum / Math.max(1, samples) / 1024);
    }
    return { value, queues_kib };
  } finally {
    clearInterval(timer);
  }
}

/**
 * Round trips of 32-byte pings on a second stream while a bulk transfer runs on the same
 * connection: the queueing a hop adds under load, which bounds a window-limited transfer.
 */
async function loadedRtts(conn: Deno.QuicConn, bytes: number) {
  let running = true;
  const pinging = (async () => {
    const { s, w } = await stream(conn);
    const r = s.readable.getReader({ mode: "byob" });
    const msg = new Uint8Array(32).fill(1);
    const out: number[] = [];
    while (running) {
      const t0 = performance.now();
      await w.write(msg);
      for (let have = 0; have < 32;) {
        const { value, done } = await r.read(new Uint8Array(32 - have));
        if (done) throw new Error("stream ended");
        have += value.length;
      }
      out.push((performance.now() - t0) * 1000);
    }
    await w.close();
    return out;
  })();
  const mib = await bulk(conn, bytes);
  running = false;
  return { mib, rtts: await pinging };
}

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return Math.round(s[Math.min(s.length - 1, Math.floor(p * s.length))]);
};

// The QUIC server's and client's socket buffers: "transport" (what src/transport sets, 4 MiB),
// "kernel" (the default, 208 KiB, as before), or N bytes. The relay turns paced packets into
// bursts when the shared cores deschedule it, and a 208 KiB buffer overflows on them.
const ENDPOINT_BUFFERS = values["endpoint-buffers"];
const echo = await spawn(["echo", MACHINE, ENDPOINT_BUFFERS]);
const echoPort = echo.first.port as number;
const caPem = echo.first.caPem as string;
const result: Record<string, unknown> = {
  mib: MIB,
  rounds: ROUNDS,
  pings: PINGS,
  endpoint_buffers: ENDPOINT_BUFFERS,
  client_buffers: values["client-buffers"] ?? ENDPOINT_BUFFERS,
  proxy_nice: PROXY_NICE,
  server_socket: echo.first.buffers,
  load_average: Deno.loadavg(),
};

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

for (const udp of MIB > 0 ? IMPLS : []) {
  const proxy = await spawn(["proxy", udp, "127.0.0.1", String(echoPort)], PROXY_NICE);
  try {
    const proxyPort = proxy.first.port as number;
    const paths = { direct: echoPort, proxy: proxyPort };
    const conns: Record<string, Deno.QuicConn> = {};
    for (const [name, port] of Object.entries(paths)) {
      const d = await dialEndpoint({
        port,
        serverName: `${MACHINE}.vault.internal`,
        caPem,
        buffers: values["client-buffers"] ?? ENDPOINT_BUFFERS,
      });
      conns[name] = d.conn;
      result.client_socket = d.buffers;
      await bulk(conns[name], 8 * 2 ** 20); // warm-up
    }
    const names = Object.keys(paths);
    const mibs: Record<string, number[]> = { direct: [], proxy: [] };
    const lost: Record<string, number> = { direct: 0, proxy: 0 };
    const unsent: Record<string, number> = { direct: 0, proxy: 0 };
    // CPU cores busy during bulk (client + server, + proxy): this machine has two to share.
    const cores: Record<string, number[]> = { direct: [], proxy: [] };
    const times: Record<string, number[]> = { direct: [], proxy: [] };
    const first = await proxy.ask();
    const cpu0 = first.cpu_s as number;
    const serverDrops0 = socketDrops(echoPort);
    let proxyBulkCpu = 0;
    let proxyBulkUser = 0;
    for (let round = 0; round < ROUNDS; round++) {
      for (const name of names) {
        const lost0 = rcvbufErrors();
        const unsent0 = sndbufErrors();
        const p0 = name === "proxy" ? await proxy.ask() : { cpu_s: 0, user_s: 0 };
        const c0 = p0.cpu_s as number;
        const e0 = cpuOf(echo.proc.pid) + cpuOf("self");
        const t0 = performance.now();
        mibs[name].push(await bulk(conns[name], MIB * 2 ** 20));
        const wall = (performance.now() - t0) / 1000;
        let used = cpuOf(echo.proc.pid) + cpuOf("self") - e0;
        if (name === "proxy") {
          const p1 = await proxy.ask();
          proxyBulkUser += (p1.user_s as number) - (p0.user_s as number);
          const p = (p1.cpu_s as number) - c0;
          proxyBulkCpu += p;
          used += p;
        }
        cores[name].push(used / wall);
        lost[name] += rcvbufErrors() - lost0;
        unsent[name] += sndbufErrors() - unsent0;
      }
      for (const name of names) times[name].push(...await rtts(conns[name], PINGS / ROUNDS));
    }
    // One more bulk per path with pings beside it.
    const loaded: Record<string, { mib: number; rtts: number[] }> = {};
    const queues: Record<string, Record<string, number>> = {};
    for (const name of names) {
      const ports: Record<string, number> = {
        server: echoPort,
        client: conns[name].endpoint.addr.port,
      };
      if (name === "proxy") {
        ports.proxy_front = proxyPort;
        ports.proxy_upstream = (await proxy.ask("upstream")).upstreamPort as number ?? -1;
      }
      const q = await queuesDuring(ports, () => loadedRtts(conns[name], MIB * 2 ** 20));
      loaded[name] = q.value;
      queues[name] = q.queues_kib;
    }
    const r: Record<string, Record<string, number>> = {};
    for (const name of names) {
      r[name] = {
        mib_s: Math.round(median(mibs[name])),
        mib_s_rounds: mibs[name].map(Math.round) as unknown as number,
        udp_rcvbuf_drops: lost[name],
        udp_sndbuf_drops: unsent[name],
        bulk_cpu_cores: Math.round(median(cores[name]) * 100) / 100,
        rtt_p50_us: pct(times[name], 0.5),
        rtt_p99_us: pct(times[name], 0.99),
        loaded_mib_s: Math.round(loaded[name].mib),
        loaded_rtt_p50_us: pct(loaded[name].rtts, 0.5),
        loaded_pings: loaded[name].rtts.length,
        loaded_rx_queues_kib: queues[name] as unknown as number,
      };
      conns[name].close();
    }
    const st = await proxy.ask();
    result[udp] = {
      ...r,
      proxy_stats: {
        drops: st.drops,
        packets_to_machine: st.packetsToMachine,
        packets_to_client: st.packetsToClient,
        cpu_s: Math.round(((st.cpu_s as number) - cpu0) * 10) / 10,
        front_socket_drops: socketDrops(proxyPort),
        bulk_cpu_s: Math.round(proxyBulkCpu * 100) / 100,
        bulk_user_s: Math.round(proxyBulkUser * 100) / 100,
        ...mmsgPerCall(first.mmsg, st.mmsg),
      },
      // Where loopback loss happened: the QUIC server's socket (default 208 KiB buffer), whichever
      // path sent to it; the host-wide counts above include the client's and other processes'.
      server_socket_drops: socketDrops(echoPort) - serverDrops0,
      throughput_ratio: Math.round((r.proxy.mib_s / r.direct.mib_s) * 100) / 100,
      // Each proxied round against the direct round just before it (a neighbour's load, or the
      // scheduler putting client and server on one core or two, moves both alike): the median.
      throughput_ratio_paired: Math.round(
        median(mibs.proxy.map((p, i) => p / mibs.direct[i])) * 100,
      ) / 100,
      added_rtt_p50_us: r.proxy.rtt_p50_us - r.direct.rtt_p50_us,
    };
    console.error(udp, JSON.stringify(result[udp]));
  } catch (err) {
    // A connection lost under heavy loss (the Deno path with kernel buffers) ends this path's run,
    // not the bench: the others are still measured.
    result[udp] = { error: String((err as Error)?.message ?? err) };
    console.error(udp, JSON.stringify(result[udp]));
  }
  proxy.proc.kill("SIGKILL");
  await proxy.proc.status;
}

// Capacity: BLASTERS clients, each through its own session, send DATAGRAM-byte datagrams as
// fast as they can (batched sends) into a sink for CAPACITY_MS; the proxy relays what it can, and its receive
// buffer overflows beyond. Datagrams/s delivered, and per CPU-second of the proxy (its JS is one
// thread: one proxy process uses at most one core for the relay itself, the kernel the rest).
for (const udp of CAPACITY_MS > 0 ? IMPLS : []) {
  const sink = await spawn(["sink"]);
  const proxy = await spawn(["proxy", udp, "127.0.0.1", String(sink.first.port)]);
  const blasters: Child[] = [];
  for (let i = 0; i < BLASTERS; i++) {
    const blaster = await spawn([
      "blast",
      String(proxy.first.port),
      `${MACHINE}.vault.internal`,
      String(DATAGRAM),
    ]);
    blasters.push(blaster);
    // Its session exists once the sink has seen its relayed Initial (resent if a buffer lost it).
    for (let k = 0; (await sink.ask()).count as number <= i; k++) {
      if (k > 200) throw new Error("no session through the proxy");
      if (k % 20 === 0) await blaster.ask("hello");
      await new Promise((r) => setTimeout(r, 5));
    }
  }
  const s0 = await sink.ask();
  const p0 = await proxy.ask();
  const lost0 = rcvbufErrors();
  const t0 = performance.now();
  const sent = (await Promise.all(blasters.map((b) => b.ask(`go ${CAPACITY_MS}`))))
    .reduce((n, b) => n + (b.sent as number), 0);
  const secs = (performance.now() - t0) / 1000;
  const s1 = await sink.ask();
  const p1 = await proxy.ask();
  const delivered = (s1.count as number) - (s0.count as number);
  const cpu = (p1.cpu_s as number) - (p0.cpu_s as number);
  result[`capacity_${udp}`] = {
    datagram_bytes: DATAGRAM,
    blasters: BLASTERS,
    offered_per_s: Math.round(sent / secs),
    relayed_per_s: Math.round(
      ((p1.packetsToMachine as number) - (p0.packetsToMachine as number)) / secs,
    ),
    delivered_per_s: Math.round(delivered / secs),
    delivered_mib_s: Math.round((delivered * DATAGRAM) / secs / 2 ** 20),
    proxy_cpu_share: Math.round((cpu / secs) * 100) / 100,
    per_proxy_cpu_second: Math.round(delivered / Math.max(cpu, 0.01)),
    udp_rcvbuf_drops: rcvbufErrors() - lost0,
  };
  console.error(`capacity ${udp}`, JSON.stringify(result[`capacity_${udp}`]));
  for (const c of [...blasters, proxy, sink]) {
    c.proc.kill("SIGKILL");
    await c.proc.status;
  }
}

// 10,000 idle sessions per UDP implementation: each from its own client socket, each routed (so
// each holds an upstream socket), then left silent.
for (const udp of SESSIONS > 0 ? IMPLS : []) {
  const proxy = await spawn(["proxy", udp, "127.0.0.1", String(echoPort)]);
  const port = proxy.first.port as number;
  const to = { transport: "udp" as const, hostname: "127.0.0.1", port };
  await proxy.ask("gc");
  const before = rssKiB(proxy.proc.pid);
  const socks: Deno.DatagramConn[] = [];
  const initial = clientInitials(clientHello({ sni: `${MACHINE}.vault.internal` }))[0];
  const t0 = performance.now();
  let sessions = 0;
  for (let i = 0; i < SESSIONS; i += 100) {
    const batch: Deno.DatagramConn[] = [];
    for (let j = i; j < Math.min(SESSIONS, i + 100); j++) {
      const s = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
      batch.push(s);
      await s.send(initial, to);
    }
    socks.push(...batch);
    // A loopback receive buffer overflows silently; resend the batch's Initials until all are in
    // (a resend from a client that has its session is just relayed).
    for (let k = 0; k < 50; k++) {
      sessions = (await proxy.ask()).sessions as number;
      if (sessions >= socks.length) break;
      await new Promise((r) => setTimeout(r, 20));
      if (k % 5 === 4) { for (const s of batch) await s.send(initial, to); }
    }
  }
  const final = await proxy.ask("gc");
  const after = rssKiB(proxy.proc.pid);
  result[`idle_sessions_${udp}`] = {
    sessions,
    setup_s: Math.round((performance.now() - t0) / 100) / 10,
    rss_before_mib: Math.round(before / 102.4) / 10,
    rss_after_mib: Math.round(after / 102.4) / 10,
    kib_per_session: Math.round(((after - before) / sessions) * 10) / 10,
    drops: final.drops,
    refusals: final.refusals,
  };
  console.error(`idle ${udp}`, JSON.stringify(result[`idle_sessions_${udp}`]));
  for (const s of socks) s.close();
  proxy.proc.kill("SIGKILL");
  await proxy.proc.status;
}
echo.proc.kill("SIGKILL");
await echo.proc.status;
console.log(JSON.stringify(result, null, 2));
