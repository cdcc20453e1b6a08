/**
 * Issue 10 WAN bench: fly-vault against OpenSSH (and mosh) across an
 * emulated link (tools/linkem: two network namespaces joined by a TUN link
 * emulator), per link profile, every figure beside its baseline in the same
 * run:
 *
 * - `fly-vault exec -- true` (cold) vs `ssh host true` and ssh with a warm
 *   ControlMaster; exec through the persistent client once the client has
 *   one (else reported "n/a");
 * - console keystroke echo p50/p99 vs `ssh -tt` and mosh;
 * - forward bulk (iperf3 up and down) vs `ssh -L`, and iperf3 direct;
 * - many small requests in parallel through forwards (head-of-line
 *   blocking) vs `ssh -L`;
 * - provisioning a rootfs vs `ssh host 'tar -xzf -'`;
 * - through vault-proxy vs direct to the same machine (issue 11): forward
 *   bulk up and down, and `exec -- true` cold.
 *
 * The server namespace holds flysim's issuer, a machine running the real
 * init, sshd, iperf3, a request server and vault-proxy in front of the
 * machine (bench/wan_server.ts); the client
 * namespace runs the real clients (bench/wan_client.ts), so everything they
 * say to the vault, the issuer's JWKS included, crosses the link.
 *
 *   npm run bench -- wan [PROFILE...] [--quick | --tiny] [--no-mosh] [--tcp-cc cubic|bbr]
 *                        [--out FILE]
 *   (the first `wan` picks this bench; `npm run bench -- wan wan` runs the wan profile only)
 *
 * Writes bench/results/wan-DATE.json (or --out) and prints a table of
 * ratios (fly-vault ÷ baseline) per profile on stderr. Needs root.
 *
 * @module
 */
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { PROFILES, startLink } from "../tools/linkem/mod.ts";
import { ensureMinbase } from "../tests/provision_fixture.ts";
import type { ClientOptions, ServerInfo } from "./wan_client.ts";

const here = fileURLToPath(new URL(".", import.meta.url));
const args = [...Deno.args];
const flag = (name: string) => {
  const i = args.indexOf(name);
  if (i >= 0) args.splice(i, 1);
  return i >= 0;
};
const option = (name: string) => {
  const i = args.indexOf(name);
  if (i < 0) return undefined;
  const v = args[i + 1];
  args.splice(i, 2);
  return v;
};
const tiny = flag("--tiny");
const quick = flag("--quick");
const mosh = !flag("--no-mosh");
const outArg = option("--out");
// TCP's congestion control (ssh, ssh -L, iperf3 direct) decides the ssh figures on lossy links:
// bbr shrugs off random loss, cubic (Linux's usual default) does not. A namespace starts with
// the host's; --tcp-cc sets another where the kernel lets us (this host's container does not).
const tcpCcWanted = option("--tcp-cc");
let tcpCc = "unknown";
const profiles = args.filter((a) => a in PROFILES);
const selected = profiles.length ? profiles : Object.keys(PROFILES);
const mode = tiny ? "tiny" : quick ? "quick" : "full";

/** Bounded per-profile time for the client side (a stuck figure fails the run, never hangs it). */
const CLIENT_BOUND_MS = { tiny: 120_000, quick: 300_000, full: 480_000 }[mode];

async function clientOptions(profile: string): Promise<ClientOptions> {
  const p = PROFILES[profile];
  if (mode === "tiny") {
    return {
      execRounds: 2,
      keys: 3,
      iperfSeconds: 1,
      requests: { connections: 10, rounds: 1, bytes: 1024 },
      provision: { rounds: 1, tarball: null, syntheticBytes: 512 * 1024 },
      rttMs: p.rttMs,
      mosh,
      proxyBulkRounds: 1,
    };
  }
  if (mode === "quick") {
    return {
      execRounds: 3,
      keys: 20,
      iperfSeconds: 2,
      requests: { connections: 50, rounds: 2, bytes: 4096 },
      provision: { rounds: 1, tarball: null, syntheticBytes: 2 * 1024 * 1024 },
      rttMs: p.rttMs,
      mosh,
      proxyBulkRounds: 2,
    };
  }
  // Fewer keys on lossy links (each lost echo waits out a retransmission).
  const slow = p.loss >= 0.01;
  return {
    execRounds: 10,
    keys: slow ? 50 : 100,
    iperfSeconds: 5,
    requests: { connections: 100, rounds: 5, bytes: 4096 },
    provision: {
      rounds: p.rttMs === 0 ? 2 : 1,
      tarball: await ensureMinbase(),
      syntheticBytes: 4 * 1024 * 1024,
    },
    rttMs: p.rttMs,
    mosh,
    proxyBulkRounds: 2,
  };
}

/** Reads the first line of a child's stdout (bounded), and the rest as it ends. */
async function firstLine(child: Deno.ChildProcess, ms: number): Promise<string> {
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, rej) => {
    timer = setTimeout(() => rej(new Error(`no answer in ${ms} ms`)), ms);
  });
  try {
    while (!text.includes("\n")) {
      const { value, done } = await Promise.race([reader.read(), timeout]);
      if (done) throw new Error("exited before it was ready");
      text += value;
    }
  } finally {
    clearTimeout(timer);
  }
  (async () => {
    while (!(await reader.read()).done) { /* drain */ }
  })().catch(() => {});
  return text.slice(0, text.indexOf("\n"));
}

/** Average RTT from 10 pings across the link, in ms. */
async function pingRtt(inNs: (argv: string[]) => string[], host: string): Promise<number | null> {
  const argv = inNs(["ping", "-q", "-c", "10", "-i", "0.1", "-W", "2", host]);
  const out = await new Deno.Command(argv[0], { args: argv.slice(1), stdout: "piped" }).output()
    .catch(() => null);
  const m = out && new TextDecoder().decode(out.stdout).match(/= [\d.]+\/([\d.]+)\//);
  return m ? Number(m[1]) : null;
}

/** UDP and TCP error counters of a namespace (/proc/net/snmp): drops a socket buffer made. */
async function socketDrops(inNs: (argv: string[]) => string[]) {
  const argv = inNs(["cat", "/proc/net/snmp"]);
  const out = await new Deno.Command(argv[0], { args: argv.slice(1), stdout: "piped" }).output();
  const lines = new TextDecoder().decode(out.stdout).split("\n");
  const table = (name: string) => {
    const [head, values] = lines.filter((l) => l.startsWith(`${name}:`));
    if (!head || !values) return {};
    const keys = head.split(/\s+/).slice(1);
    const vals = values.split(/\s+/).slice(1).map(Number);
    return Object.fromEntries(keys.map((k, i) => [k, vals[i]]));
  };
  const udp = table("Udp");
  const tcp = table("Tcp");
  return {
    udp_in_datagrams: udp.InDatagrams,
    udp_rcvbuf_errors: udp.RcvbufErrors,
    udp_sndbuf_errors: udp.SndbufErrors,
    tcp_retrans_segs: tcp.RetransSegs,
  };
}

async function runProfile(profile: string) {
  console.error(`\n== ${profile} (${mode})`);
  const link = await startLink(profile);
  let server: Deno.ChildProcess | undefined;
  // deno-lint-ignore no-explicit-any
  const link_stats: Record<string, any> = {};
  try {
    for (const ns of [link.clientNs, link.serverNs]) {
      if (!tcpCcWanted) break;
      const argv = link.inNs(ns, [
        "sysctl",
        "-qw",
        `net.ipv4.tcp_congestion_control=${tcpCcWanted}`,
      ]);
      const set = await new Deno.Command(argv[0], { args: argv.slice(1) }).output();
      if (!set.success) {
        throw new Error(`cannot set TCP congestion control ${tcpCcWanted} in ${ns}`);
      }
    }
    const ccArgv = link.inNs(link.clientNs, ["cat", "/proc/sys/net/ipv4/tcp_congestion_control"]);
    const cc = await new Deno.Command(ccArgv[0], { args: ccArgv.slice(1), stdout: "piped" })
      .output();
    tcpCc = new TextDecoder().decode(cc.stdout).trim() || "unknown";
    const measuredRtt = await pingRtt((a) => link.inNs(link.clientNs, a), link.serverIp);
    const deno = Deno.execPath();
    const serverArgv = link.inNs(link.serverNs, [
      deno,
      "run",
      "-A",
      "--quiet",
      join(here, "wan_server.ts"),
      link.serverIp,
    ]);
    server = new Deno.Command(serverArgv[0], {
      args: serverArgv.slice(1),
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const info: ServerInfo = {
      ...JSON.parse(await firstLine(server, 120_000)),
      host: link.serverIp,
    };
    const opts = await clientOptions(profile);
    const clientArgv = link.inNs(link.clientNs, [
      deno,
      "run",
      "-A",
      "--quiet",
      join(here, "wan_client.ts"),
      JSON.stringify(info),
      JSON.stringify(opts),
    ]);
    const client = new Deno.Command(clientArgv[0], {
      args: clientArgv.slice(1),
      env: { FV_WAN_PROFILE: profile },
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const timer = setTimeout(() => {
      console.error(`  ${profile}: client side over ${CLIENT_BOUND_MS / 1000} s, stopped`);
      client.kill("SIGKILL");
    }, CLIENT_BOUND_MS);
    const out = await client.output();
    clearTimeout(timer);
    if (!out.success) throw new Error(`${profile}: the client side failed (exit ${out.code})`);
    const figures = JSON.parse(new TextDecoder().decode(out.stdout));
    const sockets = {
      client: await socketDrops((a) => link.inNs(link.clientNs, a)),
      server: await socketDrops((a) => link.inNs(link.serverNs, a)),
    };
    return { link: link.profile, measured_rtt_ms: measuredRtt, figures, sockets, link_stats };
  } finally {
    if (server) {
      // Its stdin closing ends it; removing the namespace kills whatever is left.
      await server.stdin.close().catch(() => {});
      const done = await Promise.race([
        server.status.then(() => true),
        new Promise<false>((r) => setTimeout(() => r(false), 15_000)),
      ]);
      if (!done) server.kill("SIGKILL");
      await server.status;
    }
    Object.assign(link_stats, await link.close());
    console.error(`  link: ${JSON.stringify(link_stats)}`);
  }
}

const started = Date.now();
const results: Record<string, unknown> = {};
let failed = false;
for (const profile of selected) {
  try {
    results[profile] = await runProfile(profile);
  } catch (err) {
    failed = true;
    results[profile] = { error: (err as Error).message };
    console.error(`  ${profile} failed: ${(err as Error).message}`);
  }
}
const report = {
  bench: "wan",
  date: new Date().toISOString(),
  mode,
  tcp_congestion_control: tcpCc,
  seconds: Math.round((Date.now() - started) / 1000),
  profiles: results,
  notes:
    "ratios are fly-vault ÷ baseline (figures.proxy: through vault-proxy ÷ direct; times: lower is better; throughput: higher is better). Link: tools/linkem (TUN between two network namespaces; per direction: random loss, rate with a drop-tail queue, one-way delay = RTT/2 ± jitter/2 without reordering).",
};

// deno-lint-ignore no-explicit-any
type Any = any;
const row = (name: string, f: (p: Any) => unknown) => {
  const cells = selected.map((p) => {
    try {
      const v = f((results[p] as Any).figures);
      return typeof v === "number" ? v.toFixed(2) : String(v ?? "–");
    } catch {
      return "–";
    }
  });
  return `${name.padEnd(44)}${cells.map((c) => c.padStart(10)).join("")}`;
};
const table = [
  `${"ratio fly-vault ÷ baseline".padEnd(44)}${selected.map((p) => p.padStart(10)).join("")}`,
  row("exec cold ÷ ssh true (≤0.5)", (f) => f.exec.ratio_p50_cold_vs_ssh),
  row("exec cold ÷ ssh ControlMaster", (f) => f.exec.ratio_p50_cold_vs_ssh_controlmaster),
  row(
    "exec persistent ÷ ssh ControlMaster (≤1.0)",
    (f) =>
      typeof f.exec.fly_vault_exec_persistent === "string"
        ? "n/a"
        : f.exec.fly_vault_exec_persistent.ratio_p50_vs_ssh_controlmaster,
  ),
  row("echo p50 ÷ ssh -tt (≤1.0)", (f) => f.console_echo.ratio_p50_vs_ssh_tt),
  row("echo p99 ÷ ssh -tt (≤1.0)", (f) => f.console_echo.ratio_p99_vs_ssh_tt),
  row("echo p50 ÷ mosh --predict=never", (f) => f.console_echo.ratio_p50_vs_mosh_predict_never),
  row("echo p99 ÷ mosh --predict=never", (f) => f.console_echo.ratio_p99_vs_mosh_predict_never),
  row("mosh predicted echo p50 ms (default)", (f) => f.console_echo.mosh_predict_adaptive.p50_ms),
  row("forward upload ÷ ssh -L (≥1.0)", (f) => f.forward_bulk.ratio_upload_vs_ssh_L),
  row("forward download ÷ ssh -L (≥1.0)", (f) => f.forward_bulk.ratio_download_vs_ssh_L),
  row("forward upload ÷ bare QUIC stream", (f) => f.forward_bulk.ratio_upload_vs_bare_quic),
  row("forward download ÷ bare QUIC stream", (f) => f.forward_bulk.ratio_download_vs_bare_quic),
  row(
    "bare QUIC up/down Mbit/s (default: Cubic)",
    (f) =>
      `${f.forward_bulk.bare_deno_quic_stream.default_cc.upload_mbit}/${f.forward_bulk.bare_deno_quic_stream.default_cc.download_mbit}`,
  ),
  row(
    "bare QUIC up/down Mbit/s (throughput: Cubic)",
    (f) =>
      `${f.forward_bulk.bare_deno_quic_stream.throughput_cc.upload_mbit}/${f.forward_bulk.bare_deno_quic_stream.throughput_cc.download_mbit}`,
  ),
  row(
    "bare QUIC up/down Mbit/s (low-latency: BBR)",
    (f) =>
      `${f.forward_bulk.bare_deno_quic_stream.low_latency_cc.upload_mbit}/${f.forward_bulk.bare_deno_quic_stream.low_latency_cc.download_mbit}`,
  ),
  row(
    "TCP direct up/down Mbit/s",
    (f) =>
      `${f.forward_bulk.direct_across_link.upload_mbit}/${f.forward_bulk.direct_across_link.download_mbit}`,
  ),
  row("parallel requests p50 ÷ ssh -L", (f) => f.parallel_requests.ratio_p50_vs_ssh_L),
  row("parallel requests p99 ÷ ssh -L (≤0.5)", (f) => f.parallel_requests.ratio_p99_vs_ssh_L),
  row("provision ÷ ssh+tar (≤1.0)", (f) => f.provision.ratio_p50_vs_ssh_tar),
  row("via vault-proxy ÷ direct: exec cold p50", (f) => f.proxy.exec_cold.ratio_p50),
  row("via vault-proxy ÷ direct: forward upload", (f) => f.proxy.forward_bulk.ratio_upload),
  row("via vault-proxy ÷ direct: forward download", (f) => f.proxy.forward_bulk.ratio_download),
  // Whole numbers: two decimals each would run into the next column.
  row(
    "exec cold p50 ms direct/via proxy",
    (f) =>
      `${f.proxy.exec_cold.direct.p50_ms.toFixed(0)}/${
        f.proxy.exec_cold.via_proxy.p50_ms.toFixed(0)
      }`,
  ),
  row(
    "forward up Mbit/s direct/via proxy",
    (f) =>
      `${f.proxy.forward_bulk.direct.upload_mbit.toFixed(0)}/${
        f.proxy.forward_bulk.via_proxy.upload_mbit.toFixed(0)
      }`,
  ),
  row(
    "forward down Mbit/s direct/via proxy",
    (f) =>
      `${f.proxy.forward_bulk.direct.download_mbit.toFixed(0)}/${
        f.proxy.forward_bulk.via_proxy.download_mbit.toFixed(0)
      }`,
  ),
  row("measured RTT ms", (_f) => undefined),
].join("\n");
console.error(`\nTCP congestion control (ssh, ssh -L, iperf3 direct): ${tcpCc}`);
console.error(
  `${
    table.replace(/measured RTT ms.*$/, () =>
      `${"measured RTT ms".padEnd(44)}${
        selected.map((p) =>
          String((results[p] as Any)?.measured_rtt_ms ?? "–").padStart(10)
        ).join("")
      }`)
  }`,
);
const outPath = outArg ??
  join(here, "results", `wan-${report.date.slice(0, 16).replace(/:/g, "-")}.json`);
await Deno.mkdir(join(outPath, ".."), { recursive: true });
await Deno.writeTextFile(outPath, JSON.stringify(report, null, 2) + "\n");
console.error(`\nwrote ${outPath} (${report.seconds} s)`);
console.log(JSON.stringify(report, null, 2));
Deno.exit(failed ? 1 : 0);
