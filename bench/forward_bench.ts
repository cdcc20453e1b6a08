/**
 * Forward throughput against the transport's ceiling, all in one run and
 * between the same two processes (this one as the client, bench/quic_bare.ts
 * as the far side, as init is):
 *
 * - `bare_quic`: a bare Deno QUIC stream, nothing of ours on it, written and
 *   read by JS in 64 KiB chunks (as a program using the stream does);
 * - `bare_quic_native`: the same stream fed from a file and drained into
 *   /dev/null by Deno's native pipe (no JS per chunk);
 * - `bare_quic_js_write_native_read`: JS writes, native reads (the cheapest
 *   pair: Deno's native pipe is dearer than JS on the sending side here);
 * - `tagged`: the same through our transport's tagged stream, without TCP;
 * - `forward`: iperf3 through a real forward (`startForward` here →
 *   `serveForward` there → iperf3's server);
 * - `ssh_L`: iperf3 through `ssh -L` to an sshd on loopback;
 * - `direct`: iperf3 with nothing between.
 *
 * Upload is client → far side, download the reverse (iperf3 -R). Each figure
 * is the median of ROUNDS interleaved rounds, so a busy machine skews all
 * alike.
 *
 *   npx deno run -A bench/forward_bench.ts [SECONDS] [--rounds N] [--sweep]
 *
 * `--sweep` also measures bare QUIC at 16–256 KiB writes under each of
 * Deno's congestion controllers. Prints JSON.
 */
import { dialQuic } from "../src/transport/mod.ts";
import { startForward } from "../src/forward/mod.ts";
import { StreamTag } from "../src/protocol/mod.ts";
import { startSshd } from "../tests/sshd.ts";
import { type Congestion, connectBare, measure } from "./quic_bare.ts";

const args = [...Deno.args];
const flag = (name: string) => {
  const i = args.indexOf(name);
  if (i < 0) return undefined;
  const [, value] = args.splice(i, 2);
  return value ?? "";
};
const sweep = args.includes("--sweep");
if (sweep) args.splice(args.indexOf("--sweep"), 1);
const ROUNDS = Number(flag("--rounds") ?? 3);
const SECONDS = Number(args[0] ?? 3);
/** Bytes per bare/tagged measurement: about as long as an iperf3 run at loopback QUIC speed. */
const COUNT = Math.round(Number(flag("--mib") ?? 256 * SECONDS / 3)) * 1024 * 1024;
const WRITE = 64 * 1024;

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

async function waitForPort(port: number, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  throw new Error(`port ${port} never accepted`);
}

/** Waits until something listens on `port`, without connecting (iperf3 dislikes empty connections). */
async function waitForListener(port: number, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    try {
      Deno.listen({ hostname: "127.0.0.1", port }).close();
    } catch (err) {
      if (err instanceof Deno.errors.AddrInUse) return;
      throw err;
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`nothing listened on ${port}`);
}

let iperfRetries = 0;
/**
 * Runs iperf3 against `port`; returns received Gbit/s. `reverse` measures the download side.
 * The server may still be closing the previous test (its last bytes and FIN cross a
 * forward after the client has gone): it then refuses the next one ("busy"), or closes
 * its control connection unread, which reaches the client as a reset ("closed
 * unexpectedly"). Retry those for a while; the count is in the results.
 */
async function iperf(port: number, reverse = false): Promise<{ gbps: number; bytes: number }> {
  for (let attempt = 0;; attempt++) {
    try {
      return await iperfOnce(port, reverse);
    } catch (err) {
      if (!/busy|closed unexpectedly/.test(String(err)) || attempt >= 20) throw err;
      iperfRetries++;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

async function iperfOnce(port: number, reverse: boolean): Promise<{ gbps: number; bytes: number }> {
  const out = await new Deno.Command("iperf3", {
    args: [
      "-c",
      "127.0.0.1",
      "-p",
      String(port),
      "-t",
      String(SECONDS),
      "-J",
      ...(reverse ? ["-R"] : []),
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const report = JSON.parse(new TextDecoder().decode(out.stdout));
  if (report.error) throw new Error(`iperf3: ${report.error}`);
  const sum = report.end.sum_received;
  return { gbps: sum.bits_per_second / 1e9, bytes: sum.bytes };
}

/** Starts the far side; resolves with its JSON line. */
async function startPeer(congestion: Congestion = "default") {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--quiet",
      "--unstable-net",
      new URL("./quic_bare.ts", import.meta.url).pathname,
      congestion,
    ],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let first = "";
  while (!first.includes("\n")) {
    const r = await lines.read();
    if (r.done) throw new Error("quic_bare.ts exited before it listened");
    first += r.value;
  }
  lines.releaseLock();
  const info = JSON.parse(first.split("\n")[0]) as {
    barePort: number;
    taggedPort: number;
    caPem: string;
    serverName: string;
  };
  return {
    info,
    pid: child.pid,
    async stop() {
      child.kill("SIGTERM");
      await child.status;
    },
  };
}

/** CPU seconds `pid` has used so far, all threads (utime + stime from /proc). */
function cpuSeconds(pid: number): number {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

type Pair = { upload: number; download: number };
const samples: Record<string, { upload: number[]; download: number[] }> = {};
/** CPU milliseconds per GiB moved, this process (client) and the far side. */
const cpu: Record<string, Record<keyof Pair, { client: number[]; far: number[] }>> = {};
/** Runs one measurement, recording Gbit/s and (when `farPid` is given) CPU per GiB on each side. */
async function record(
  name: string,
  dir: keyof Pair,
  run: () => Promise<{ gbps: number; bytes: number }>,
  farPid?: number,
) {
  const c0 = cpuSeconds(Deno.pid);
  const f0 = farPid ? cpuSeconds(farPid) : 0;
  const { gbps, bytes } = await run();
  (samples[name] ??= { upload: [], download: [] })[dir].push(gbps);
  if (farPid) {
    const gib = bytes / 2 ** 30;
    const per = (cpu[name] ??= {
      upload: { client: [], far: [] },
      download: { client: [], far: [] },
    })[dir];
    per.client.push((cpuSeconds(Deno.pid) - c0) * 1000 / gib);
    per.far.push((cpuSeconds(farPid) - f0) * 1000 / gib);
  }
}
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor(s.length / 2)] : NaN;
};
const r3 = (x: number) => +x.toFixed(3);

const iperfPort = freePort();
const iperfServer = new Deno.Command("iperf3", {
  args: ["-s", "-B", "127.0.0.1", "-p", String(iperfPort)],
  stdout: "null",
  stderr: "null",
}).spawn();
await waitForPort(iperfPort);

const results: Record<string, unknown> = {
  bench: "forward throughput vs bare QUIC and ssh -L, single stream (loopback)",
  seconds: SECONDS,
  rounds: ROUNDS,
  bare_mib: COUNT / 1024 / 1024,
  bare_write_kib: WRITE / 1024,
  cpus: navigator.hardwareConcurrency,
  loadavg_at_start: Deno.loadavg().map((x) => +x.toFixed(2)),
};
const peer = await startPeer();
const sshd = await startSshd();
const lport = freePort();
const tunnel = new Deno.Command("ssh", {
  args: [
    "-N",
    ...sshd.options,
    "-L",
    `127.0.0.1:${lport}:127.0.0.1:${iperfPort}`,
    "root@127.0.0.1",
  ],
  stdout: "null",
  stderr: "null",
}).spawn();
try {
  await waitForListener(lport);
  const bare = await connectBare(peer.info);
  const conn = await dialQuic({
    address: `127.0.0.1:${peer.info.taggedPort}`,
    serverName: peer.info.serverName,
    caPem: peer.info.caPem,
    timeoutMs: 5000,
  });
  /** A stream through our transport (tag byte, then the bare commands). */
  const tagged = () => conn.openStream(StreamTag.copy);
  const fwd = startForward((tag) => conn.openStream(tag), `0:127.0.0.1:${iperfPort}`);
  for (let round = 0; round < ROUNDS; round++) {
    for (const dir of ["upload", "download"] as const) {
      const up = dir === "upload";
      const far = peer.pid;
      const js = { op: up ? "u" as const : "d" as const, write: WRITE, count: COUNT };
      const native = { ...js, op: up ? "U" as const : "D" as const };
      await record(
        "bare_quic",
        dir,
        async () => measure(await bare.createBidirectionalStream(), js),
        far,
      );
      await record(
        "bare_quic_native",
        dir,
        async () => measure(await bare.createBidirectionalStream(), native),
        far,
      );
      const mixed = { ...js, op: up ? "v" as const : "w" as const };
      await record(
        "bare_quic_js_write_native_read",
        dir,
        async () => measure(await bare.createBidirectionalStream(), mixed),
        far,
      );
      await record("tagged", dir, async () => measure(await tagged(), js), far);
      await record("forward", dir, () => iperf(fwd.addr.port, !up), far);
      await record("ssh_L", dir, () => iperf(lport, !up));
      if (round === 0) await record("direct", dir, () => iperf(iperfPort, !up));
    }
  }
  await fwd.close();
  await conn.close();
  bare.close();
} finally {
  tunnel.kill("SIGTERM");
  await tunnel.status;
  await sshd.stop();
  await peer.stop();
}

if (sweep) {
  // Write size × congestion controller, bare QUIC only (each controller set on both ends).
  for (const cc of ["default", "throughput", "low-latency"] as const) {
    const p = await startPeer(cc);
    try {
      const bare = await connectBare(p.info, cc);
      for (const kib of [16, 64, 128, 256]) {
        const write = kib * 1024;
        for (const dir of ["upload", "download"] as const) {
          const op = dir === "upload" ? "u" as const : "d" as const;
          await record(
            `sweep ${cc} ${kib}KiB`,
            dir,
            async () =>
              measure(await bare.createBidirectionalStream(), { op, write, count: COUNT }),
            p.pid,
          );
        }
      }
      bare.close();
    } finally {
      await p.stop();
    }
  }
}
iperfServer.kill("SIGTERM");
await iperfServer.status;
const gbps: Record<string, Pair> = {};
for (const [name, s] of Object.entries(samples)) {
  gbps[name] = { upload: r3(median(s.upload)), download: r3(median(s.download)) };
}
results.gbps = gbps;
results.samples_gbps = Object.fromEntries(
  Object.entries(samples).map((
    [k, s],
  ) => [k, { upload: s.upload.map(r3), download: s.download.map(r3) }]),
);
const ratio = (a: string, b: string) => ({
  upload: r3(gbps[a].upload / gbps[b].upload),
  download: r3(gbps[a].download / gbps[b].download),
});
results.cpu_ms_per_gib = Object.fromEntries(
  Object.entries(cpu).map(([k, v]) => [k, {
    upload: { client: Math.round(median(v.upload.client)), far: Math.round(median(v.upload.far)) },
    download: {
      client: Math.round(median(v.download.client)),
      far: Math.round(median(v.download.far)),
    },
  }]),
);
// On a busy machine wall-clock rates swing with the neighbours; CPU per byte does not. With a
// core per process the busier side sets the ceiling: GiB/s = 1000 / max(client, far) ms/GiB.
const ceiling = (k: string, d: keyof Pair) => {
  const v = cpu[k][d];
  return 2 ** 30 * 8 / 1e9 * 1000 / Math.max(median(v.client), median(v.far));
};
const ceilings: Record<string, Pair> = {};
for (const k of Object.keys(cpu)) {
  ceilings[k] = { upload: r3(ceiling(k, "upload")), download: r3(ceiling(k, "download")) };
}
results.cpu_bound_ceiling_gbps = ceilings;
results.ratio_forward_over_bare_quic_cpu = {
  upload: r3(ceilings.forward.upload / ceilings.bare_quic.upload),
  download: r3(ceilings.forward.download / ceilings.bare_quic.download),
};
results.ratio_forward_over_bare_quic_native_cpu = {
  upload: r3(ceilings.forward.upload / ceilings.bare_quic_native.upload),
  download: r3(ceilings.forward.download / ceilings.bare_quic_native.download),
};
const best = "bare_quic_js_write_native_read";
results.ratio_forward_over_bare_quic_best_cpu = {
  upload: r3(ceilings.forward.upload / ceilings[best].upload),
  download: r3(ceilings.forward.download / ceilings[best].download),
};
results.ratio_forward_over_bare_quic = ratio("forward", "bare_quic");
results.ratio_forward_over_bare_quic_best = ratio("forward", best);
results.ratio_forward_over_bare_quic_native = ratio("forward", "bare_quic_native");
results.ratio_tagged_over_bare_quic = ratio("tagged", "bare_quic");
results.ratio_forward_over_ssh_L = ratio("forward", "ssh_L");
results.iperf_retries = iperfRetries;
results.notes =
  "Client side in this process, far side (quic_bare.ts: bare endpoint, our listenQuic, real serveForward) in another; " +
  "bare/bare_native/tagged move bare_mib MiB (JS: 64 KiB writes), forward/ssh_L/direct are iperf3 -t SECONDS (128 KiB writes); " +
  "ssh: OpenSSH default cipher. Same machine, same run, medians of interleaved rounds.";
console.log(JSON.stringify(results, null, 2));
