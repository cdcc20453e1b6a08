/**
 * vault-proxy against the direct path, same run (issue 6 targets: bulk
 * throughput ≥ 0.9× direct, added RTT p50 ≤ 100 µs), for both UDP
 * implementations; then memory for 10,000 idle sessions. Client, proxy and
 * echo server are separate processes. Prints one JSON object.
 *
 *   npx deno run -A bench/proxy_bench.ts [--mib 64] [--pings 2000] [--sessions 10000]
 */
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { clientHello, clientInitials } from "../src/proxy/testutil.ts";
import { dial } from "../tests/proxy_fixture.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    mib: { type: "string", default: "64" },
    pings: { type: "string", default: "2000" },
    sessions: { type: "string", default: "10000" },
    impls: { type: "string", default: "mmsg,deno,node" },
  },
});
const IMPLS = values.impls.split(",");
const MIB = Number(values.mib);
const PINGS = Number(values.pings);
const SESSIONS = Number(values.sessions);
const CHILD = fileURLToPath(new URL("./proxy_child.ts", import.meta.url));
const MACHINE = "be0c4b0c4b0c4b";

interface Child {
  proc: Deno.ChildProcess;
  first: Record<string, unknown>;
  ask(what?: string): Promise<Record<string, unknown>>;
}

async function spawn(args: string[]): Promise<Child> {
  const proc = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--quiet", "--v8-flags=--expose-gc", CHILD, ...args],
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

/** Host-wide UDP receive-buffer overflows (loopback loss); other processes add to it too. */
function rcvbufErrors(): number {
  const lines = Deno.readTextFileSync("/proc/net/snmp").split("\n").filter((l) =>
    l.startsWith("Udp:")
  );
  const [names, vals] = lines.map((l) => l.split(/\s+/));
  return Number(vals[names.indexOf("RcvbufErrors")]);
}

function rssKiB(pid: number): number {
  const m = Deno.readTextFileSync(`/proc/${pid}/status`).match(/VmRSS:\s+(\d+)/);
  return Number(m![1]);
}

async function bulk(conn: Deno.QuicConn, bytes: number): Promise<number> {
  const s = await conn.createBidirectionalStream();
  const chunk = new Uint8Array(64 * 1024).fill(7);
  const t0 = performance.now();
  const writing = (async () => {
    const w = s.writable.getWriter();
    for (let sent = 0; sent < bytes; sent += chunk.length) await w.write(chunk);
    await w.close();
  })();
  let got = 0;
  for await (const c of s.readable) got += c.length;
  await writing;
  const secs = (performance.now() - t0) / 1000;
  if (got !== bytes) throw new Error(`echoed ${got} of ${bytes}`);
  return bytes / secs / 2 ** 20; // MiB/s each way
}

async function rtts(conn: Deno.QuicConn, n: number): Promise<number[]> {
  const s = await conn.createBidirectionalStream();
  const w = s.writable.getWriter();
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

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return Math.round(s[Math.min(s.length - 1, Math.floor(p * s.length))]);
};

const echo = await spawn(["echo", MACHINE]);
const echoPort = echo.first.port as number;
const caPem = echo.first.caPem as string;
const result: Record<string, unknown> = { mib: MIB, pings: PINGS };

for (const udp of MIB > 0 ? IMPLS : []) {
  const proxy = await spawn(["proxy", udp, "127.0.0.1", String(echoPort)]);
  const proxyPort = proxy.first.port as number;
  const paths = { direct: echoPort, proxy: proxyPort };
  const r: Record<string, Record<string, number>> = {};
  for (const [name, port] of Object.entries(paths)) {
    const conn = await dial({
      hostname: "127.0.0.1",
      port,
      serverName: `${MACHINE}.vault.internal`,
      caPem,
      idleMs: 30_000,
    });
    await bulk(conn, 8 * 2 ** 20); // warm-up
    const lost0 = rcvbufErrors();
    const mibs = await bulk(conn, MIB * 2 ** 20);
    const lost = rcvbufErrors() - lost0;
    const t = await rtts(conn, PINGS);
    r[name] = {
      mib_s: Math.round(mibs),
      udp_rcvbuf_drops: lost,
      rtt_p50_us: pct(t, 0.5),
      rtt_p99_us: pct(t, 0.99),
    };
    conn.close();
  }
  const st = await proxy.ask();
  result[udp] = {
    ...r,
    proxy_stats: {
      drops: st.drops,
      packets_to_machine: st.packetsToMachine,
      packets_to_client: st.packetsToClient,
    },
    throughput_ratio: Math.round((r.proxy.mib_s / r.direct.mib_s) * 100) / 100,
    added_rtt_p50_us: r.proxy.rtt_p50_us - r.direct.rtt_p50_us,
  };
  console.error(udp, JSON.stringify(result[udp]));
  proxy.proc.kill("SIGKILL");
  await proxy.proc.status;
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
