/**
 * The client side of the WAN bench, run inside the client namespace
 * (`ip netns exec fvbench-…-c`): every figure of issue 10, each beside its
 * OpenSSH (or mosh) baseline in the same run, and fly-vault through
 * vault-proxy beside fly-vault direct (issue 11), against the server side that
 * bench/wan_server.ts describes. Prints one JSON object.
 *
 *   deno run -A bench/wan_client.ts SERVER_INFO_JSON OPTIONS_JSON
 *
 * @module
 */
import { join } from "node:path";
import { spawnPty } from "../src/console/pty.ts";
import { ROOT } from "../tests/harness.ts";
import { median, quantile } from "./lib/stats.ts";
import { benchVaultTable } from "./lib/vault_toml.ts";
import { bareQuicBulk, type BareQuicServer } from "./lib/bare_quic.ts";

/** What wan_server.ts printed. */
export interface ServerInfo {
  machineAddress: string;
  issuer: string;
  org: string;
  app: string;
  sshdPort: number;
  sshOptions: string[];
  iperfPort: number;
  requestPort: number;
  bareQuic: BareQuicServer;
  /** vault-proxy in front of the machine, on `host`: its UDP port and its metrics' port. */
  proxy: { port: number; adminPort: number; udp: string; machineId: string };
  tarDir: string;
  volumeDir: string;
  /** The server's link address. */
  host: string;
}

/** How much of each figure to run. */
export interface ClientOptions {
  execRounds: number;
  keys: number;
  iperfSeconds: number;
  requests: { connections: number; rounds: number; bytes: number };
  /** A tarball path (e.g. the Debian minbase), or null for a synthetic one of `syntheticBytes`. */
  provision: { rounds: number; tarball: string | null; syntheticBytes: number };
  /** Ms of one round trip on the link (for the "in RTTs" figures). */
  rttMs: number;
  mosh: boolean;
  /** Rounds of forward bulk (up and down) direct and through vault-proxy, alternating. */
  proxyBulkRounds: number;
}

const info: ServerInfo = JSON.parse(Deno.args[0]);
const opts: ClientOptions = JSON.parse(Deno.args[1]);
const decoder = new TextDecoder();
const encoder = new TextEncoder();
const log = (s: string) => console.error(`  [${Deno.env.get("FV_WAN_PROFILE") ?? "?"}] ${s}`);

const work = await Deno.makeTempDir({ prefix: "fv-wan-client-" });
const configDir = join(work, "config");
await Deno.mkdir(configDir, { mode: 0o700 });
const env = { FLY_VAULT_CONFIG_DIR: configDir, NO_COLOR: "1" };
const sshTarget = `root@${info.host}`;
const ssh = ["ssh", ...info.sshOptions];
const flyVault = [Deno.execPath(), "run", "-A", "--quiet", join(ROOT, "bin", "fly-vault.ts")];

const hostPort = (host: string, port: number) =>
  host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;

async function writeConfig(rootfs?: string) {
  const base = { org: info.org, app: info.app, issuer: info.issuer };
  const lines = [
    ...benchVaultTable("demo", { ...base, address: info.machineAddress, rootfs }),
    // The same machine through vault-proxy, which routes by machine_id (the TLS server name).
    ...benchVaultTable("proxied", {
      ...base,
      address: hostPort(info.host, info.proxy.port),
      machineId: info.proxy.machineId,
    }),
  ];
  const path = join(configDir, "config.toml");
  await Deno.writeTextFile(path, lines.join("\n"), { mode: 0o600 });
  await Deno.chmod(path, 0o600);
}

/** Runs to completion; throws with its stderr when it fails. Returns wall ms and stdout. */
async function run(
  argv: string[],
  o: { stdinFile?: string; env?: Record<string, string> } = {},
): Promise<{ ms: number; out: string }> {
  const started = performance.now();
  const child = new Deno.Command(argv[0], {
    args: argv.slice(1),
    env: o.env,
    stdin: o.stdinFile ? "piped" : "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (o.stdinFile) {
    const f = await Deno.open(o.stdinFile);
    await f.readable.pipeTo(child.stdin);
  }
  const out = await child.output();
  const ms = performance.now() - started;
  if (!out.success) {
    throw new Error(
      `${argv.slice(0, 8).join(" ")}… failed (${out.code}): ${decoder.decode(out.stderr)}`,
    );
  }
  return { ms, out: decoder.decode(out.stdout) };
}

const stat = (xs: number[]) => ({
  p50_ms: +median(xs).toFixed(1),
  p90_ms: +quantile(xs, 0.9).toFixed(1),
  p99_ms: +quantile(xs, 0.99).toFixed(1),
  samples: xs.length,
});
const ratio = (a: number, b: number) => +(a / b).toFixed(3);

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** Waits until `port` is taken (something listens), without connecting; bounded. */
async function waitForListener(port: number, child: Deno.ChildProcess, ms = 30_000) {
  const deadline = Date.now() + ms;
  let exited = false;
  child.status.then(() => exited = true);
  while (Date.now() < deadline && !exited) {
    try {
      Deno.listen({ hostname: "127.0.0.1", port }).close();
    } catch (err) {
      if (err instanceof Deno.errors.AddrInUse) return;
      throw err;
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`nothing listened on ${port}${exited ? " (the forwarder exited)" : ""}`);
}

// ---------------------------------------------------------------- exec

/** Whether this client has a persistent connection (issue 10 item 2): its exec knows --no-persist. */
async function hasPersistentClient(): Promise<boolean> {
  const help = await new Deno.Command(flyVault[0], {
    args: [...flyVault.slice(1), "exec", "--help"],
    env,
    stdout: "piped",
    stderr: "piped",
  }).output();
  return decoder.decode(help.stdout).includes("--no-persist");
}

async function execFigure() {
  const persist = await hasPersistentClient();
  const cold = [...flyVault, "exec", "-n", ...(persist ? ["--no-persist"] : []), "demo", "--"];
  await run([...cold, "true"], { env }); // attests and pins; warms Deno's module cache
  const cm = join(work, "cm");
  const sshCm = [
    ...ssh,
    "-o",
    "ControlMaster=auto",
    "-o",
    `ControlPath=${cm}`,
    "-o",
    "ControlPersist=300",
  ];
  await run([...sshCm, sshTarget, "true"]); // leaves the master
  const warm = [...flyVault, "exec", "-n", "demo", "--", "true"];
  if (persist) await run(warm, { env }); // leaves the persistent client
  const samples: Record<string, number[]> = { fv: [], ssh: [], sshCm: [], fvPersist: [] };
  for (let i = 0; i < opts.execRounds; i++) {
    samples.fv.push((await run([...cold, "true"], { env })).ms);
    samples.ssh.push((await run([...ssh, sshTarget, "true"])).ms);
    samples.sshCm.push((await run([...sshCm, sshTarget, "true"])).ms);
    if (persist) samples.fvPersist.push((await run(warm, { env })).ms);
  }
  await run([...sshCm, "-O", "exit", sshTarget]).catch(() => {});
  const persistent = persist
    ? {
      ...stat(samples.fvPersist),
      ratio_p50_vs_ssh_controlmaster: ratio(median(samples.fvPersist), median(samples.sshCm)),
      in_rtts: opts.rttMs ? ratio(median(samples.fvPersist), opts.rttMs) : null,
      target: "<= 1.0x ssh ControlMaster; <= 1.2 RTT",
    }
    : "n/a: no persistent client yet (fly-vault exec has no --no-persist)";
  return {
    fly_vault_exec_cold: stat(samples.fv),
    ssh_true: stat(samples.ssh),
    ssh_controlmaster_true: stat(samples.sshCm),
    fly_vault_exec_persistent: persistent,
    ratio_p50_cold_vs_ssh: ratio(median(samples.fv), median(samples.ssh)),
    ratio_p50_cold_vs_ssh_controlmaster: ratio(median(samples.fv), median(samples.sshCm)),
    target: "cold <= 0.5x ssh host true",
  };
}

// ---------------------------------------------------------------- console echo

/** A program on a local PTY, as a terminal emulator runs it; `until` waits on its output. */
function ptyProgram(argv: string[], extraEnv: Record<string, string>) {
  const p = spawnPty(argv, {
    cols: 80,
    rows: 24,
    term: "xterm",
    env: {
      PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
      HOME: "/root",
      TERM: "xterm",
      LANG: "C.UTF-8",
      ...extraEnv,
    },
  });
  const queue: Uint8Array[] = [];
  let wake: (() => void) | null = null;
  let ended = false;
  p.onData((b) => {
    queue.push(b);
    wake?.();
  });
  p.onExit(() => {
    ended = true;
    wake?.();
  });
  let text = "";
  return {
    p,
    /** Waits (bounded) until the output since the last match satisfies `pred`. */
    async until(pred: (text: string) => boolean, ms = 30_000): Promise<void> {
      const deadline = Date.now() + ms;
      while (!pred(text)) {
        if (!queue.length) {
          if (ended) throw new Error(`output ended; last: ${JSON.stringify(text.slice(-300))}`);
          const left = deadline - Date.now();
          if (left <= 0) {
            throw new Error(`no match in ${ms} ms; last: ${JSON.stringify(text.slice(-300))}`);
          }
          let timer: ReturnType<typeof setTimeout> | undefined;
          await new Promise<void>((r) => {
            wake = r;
            timer = setTimeout(r, left);
          });
          clearTimeout(timer);
          wake = null;
          continue;
        }
        text += decoder.decode(queue.shift()!, { stream: true });
      }
      text = "";
    },
  };
}

/** Types `a` keys one at a time, timing each until its echo shows; the first few warm up. */
async function typeKeys(t: ReturnType<typeof ptyProgram>): Promise<number[]> {
  const samples: number[] = [];
  const warmup = Math.min(5, opts.keys);
  for (let i = 0; i < opts.keys + warmup; i++) {
    const t0 = performance.now();
    t.p.write(encoder.encode("a"));
    await t.until((s) => s.includes("a"));
    if (i >= warmup) samples.push(performance.now() - t0);
  }
  t.p.write(encoder.encode("\x15exit\r")); // Ctrl-U clears the line of a's
  return samples;
}

const shell = "env PS1='fv# ' bash --norc --noprofile -i";

async function consoleFigure() {
  const fv = ptyProgram([...flyVault, "connect", "demo"], env);
  await fv.until((s) => /[#$] $/.test(s));
  const fvKeys = await typeKeys(fv);
  fv.p.kill("SIGKILL");

  const sshc = ptyProgram(["ssh", "-tt", ...info.sshOptions, sshTarget, shell], {});
  await sshc.until((s) => s.includes("fv# "));
  const sshKeys = await typeKeys(sshc);
  sshc.p.kill("SIGKILL");

  // mosh logs in over ssh, starts mosh-server there, then talks UDP (60000+) across the link.
  // Twice: with its default adaptive local echo (what a mosh user sees: predicted keys show at
  // once) and with --predict=never (the echo comes from the server, comparable to ours).
  const moshRun = async (predict: string) => {
    if (!opts.mosh) return { keys: [] as number[], summary: "not run (--no-mosh)" as unknown };
    try {
      const m = ptyProgram([
        "mosh",
        `--predict=${predict}`,
        `--ssh=ssh ${info.sshOptions.join(" ")}`,
        sshTarget,
        "--",
        "env",
        "PS1=fv# ",
        "bash",
        "--norc",
        "--noprofile",
        "-i",
      ], {});
      await m.until((s) => s.includes("fv# "));
      const keys = await typeKeys(m);
      m.p.kill("SIGKILL");
      return { keys, summary: stat(keys) as unknown };
    } catch (err) {
      return { keys: [], summary: `failed: ${(err as Error).message.slice(0, 300)}` };
    }
  };
  const moshAdaptive = await moshRun("adaptive");
  const moshNever = await moshRun("never");
  const moshKeys = moshNever.keys;
  return {
    fly_vault_connect: stat(fvKeys),
    ssh_tt: stat(sshKeys),
    mosh_predict_adaptive: moshAdaptive.summary,
    mosh_predict_never: moshNever.summary,
    ratio_p50_vs_ssh_tt: ratio(median(fvKeys), median(sshKeys)),
    ratio_p99_vs_ssh_tt: ratio(quantile(fvKeys, 0.99), quantile(sshKeys, 0.99)),
    ...(moshKeys.length
      ? {
        ratio_p50_vs_mosh_predict_never: ratio(median(fvKeys), median(moshKeys)),
        ratio_p99_vs_mosh_predict_never: ratio(quantile(fvKeys, 0.99), quantile(moshKeys, 0.99)),
      }
      : {}),
    target: "p50 and p99 <= 1.0x ssh -tt (wan, lossy)",
    notes:
      "keys typed one at a time into each real client on a local PTY; time until the echo shows. mosh_predict_adaptive is mosh's default local echo (a predicted key shows at once, before the server has it); mosh_predict_never shows the server's echo, the like-for-like baseline.",
  };
}

// ---------------------------------------------------------------- forwards

async function iperf(host: string, port: number, reverse: boolean): Promise<number> {
  // The server takes a moment to finish the last test after its client is done ("busy"), and
  // now and then a control connection is reset across a lossy link: retry, a bounded number of
  // times (a figure that fails for good fails the run).
  let failures = 0;
  for (let attempt = 0;; attempt++) {
    try {
      return await iperfOnce(host, port, reverse);
    } catch (err) {
      const busy = /busy/.test((err as Error).message);
      if (!busy) failures++;
      if (attempt >= 50 || failures >= 3) throw err;
      log(`iperf3 again after: ${(err as Error).message}`);
      await new Promise((r) => setTimeout(r, busy ? 200 : 1000));
    }
  }
}

async function iperfOnce(host: string, port: number, reverse: boolean): Promise<number> {
  const out = await new Deno.Command("iperf3", {
    args: [
      "-c",
      host,
      "-p",
      String(port),
      "-t",
      String(opts.iperfSeconds),
      "-J",
      "--connect-timeout",
      "10000",
      ...(reverse ? ["-R"] : []),
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const report = JSON.parse(decoder.decode(out.stdout) || "{}");
  if (report.error || !report.end) throw new Error(`iperf3: ${report.error ?? "no report"}`);
  return +(report.end.sum_received.bits_per_second / 1e6).toFixed(1);
}

/** One keep-alive connection per slot; each round asks all at once for `bytes` and times each answer. */
async function requests(host: string, port: number): Promise<number[]> {
  const { connections, rounds, bytes } = opts.requests;
  const conns = await Promise.all(
    Array.from({ length: connections }, () => Deno.connect({ hostname: host, port })),
  );
  const samples: number[] = [];
  const ask = async (c: Deno.Conn) => {
    const t0 = performance.now();
    await c.write(encoder.encode(`${bytes}\n`));
    const buf = new Uint8Array(64 * 1024);
    let got = 0;
    while (got < bytes) {
      const n = await c.read(buf);
      if (n === null) throw new Error("a forwarded connection closed mid-answer");
      got += n;
    }
    return performance.now() - t0;
  };
  try {
    // A first round opens the forwarded connections end to end (stream or channel, far
    // connect); it is not timed, so the rounds measure requests on open connections.
    await Promise.all(conns.map(ask));
    for (let r = 0; r < rounds; r++) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const deadline = new Promise<never>((_, rej) => {
        timer = setTimeout(() => rej(new Error("a round of requests took over 120 s")), 120_000);
      });
      try {
        samples.push(...await Promise.race([Promise.all(conns.map(ask)), deadline]));
      } finally {
        clearTimeout(timer);
      }
    }
  } finally {
    for (const c of conns) c.close();
  }
  return samples;
}

/**
 * Runs `fn` with forwards to the iperf3 and request servers, by fly-vault (to `vault`: "demo"
 * direct, "proxied" through vault-proxy) or by ssh -L.
 */
async function withForward<T>(
  kind: "fly-vault" | "ssh",
  fn: (iperfPort: number, requestPort: number) => Promise<T>,
  vault = "demo",
): Promise<T> {
  const [a, b] = [freePort(), freePort()];
  const specs = [`${a}:127.0.0.1:${info.iperfPort}`, `${b}:127.0.0.1:${info.requestPort}`];
  const child = new Deno.Command(
    kind === "ssh" ? "ssh" : flyVault[0],
    {
      args: kind === "ssh"
        ? ["-N", ...info.sshOptions, ...specs.flatMap((s) => ["-L", `127.0.0.1:${s}`]), sshTarget]
        : [...flyVault.slice(1), "forward", vault, ...specs],
      env: kind === "ssh" ? undefined : env,
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    },
  ).spawn();
  const errText = new Response(child.stderr).text();
  try {
    await waitForListener(a, child);
    await waitForListener(b, child);
    return await fn(a, b);
  } catch (err) {
    child.kill("SIGKILL");
    throw new Error(`${kind} forward: ${(err as Error).message}; its stderr: ${await errText}`);
  } finally {
    try {
      child.kill("SIGTERM");
    } catch { /* exited */ }
    await child.status;
  }
}

const bulk = async (port: number, host = "127.0.0.1") => ({
  upload_mbit: await iperf(host, port, false),
  download_mbit: await iperf(host, port, true),
});

async function forwardFigures() {
  log("forwards: direct");
  const direct = await bulk(info.iperfPort, info.host);
  log("forwards: bare QUIC streams");
  const bare = {
    default_cc: await bareQuicBulk(info.host, info.bareQuic, opts.iperfSeconds, "default"),
    throughput_cc: await bareQuicBulk(info.host, info.bareQuic, opts.iperfSeconds, "throughput"),
    // What src/transport uses (quinn's BBR).
    low_latency_cc: await bareQuicBulk(info.host, info.bareQuic, opts.iperfSeconds, "low-latency"),
  };
  const directReq = await requests(info.host, info.requestPort);
  log("forwards: fly-vault");
  const fv = await withForward("fly-vault", async (i, r) => ({
    bulk: await bulk(i),
    req: await requests("127.0.0.1", r),
  }));
  log("forwards: ssh -L");
  const sshL = await withForward("ssh", async (i, r) => ({
    bulk: await bulk(i),
    req: await requests("127.0.0.1", r),
  }));
  return {
    bulk: {
      direct_across_link: direct,
      bare_deno_quic_stream: bare,
      fly_vault_forward: fv.bulk,
      ssh_L: sshL.bulk,
      ratio_upload_vs_ssh_L: ratio(fv.bulk.upload_mbit, sshL.bulk.upload_mbit),
      ratio_download_vs_ssh_L: ratio(fv.bulk.download_mbit, sshL.bulk.download_mbit),
      ratio_upload_vs_bare_quic: ratio(fv.bulk.upload_mbit, bare.low_latency_cc.upload_mbit),
      ratio_download_vs_bare_quic: ratio(fv.bulk.download_mbit, bare.low_latency_cc.download_mbit),
      seconds: opts.iperfSeconds,
      target: ">= 1.0x ssh -L (wan, lossy)",
    },
    parallel_requests: {
      ...opts.requests,
      direct_across_link: stat(directReq),
      fly_vault_forward: stat(fv.req),
      ssh_L: stat(sshL.req),
      ratio_p50_vs_ssh_L: ratio(median(fv.req), median(sshL.req)),
      ratio_p99_vs_ssh_L: ratio(quantile(fv.req, 0.99), quantile(sshL.req, 0.99)),
      target: "p99 <= 0.5x ssh -L (lossy)",
      notes:
        "each round: every keep-alive connection asks for `bytes` at once; time per answer. ssh -L carries all on one TCP connection (head-of-line blocking); fly-vault one QUIC stream each.",
    },
  };
}

// ---------------------------------------------------------------- through vault-proxy

/** Datagrams the proxy relayed and dropped so far, from its metrics across the link. */
async function proxyCounters() {
  const res = await fetch(`http://${hostPort(info.host, info.proxy.adminPort)}/metrics`, {
    signal: AbortSignal.timeout(10_000),
  });
  const text = await res.text();
  const sum = (name: string, label = "") => {
    let n = 0;
    for (const line of text.split("\n")) {
      if (line.startsWith(`${name}{`) && line.includes(label)) n += Number(line.split(" ").pop());
    }
    return n;
  };
  const byReason = (name: string) => {
    const out: Record<string, number> = {};
    for (const m of text.matchAll(new RegExp(`^${name}\\{reason="([^"]*)"\\} (\\S+)$`, "gm"))) {
      out[m[1]] = Number(m[2]);
    }
    return out;
  };
  return {
    packets_to_machine: sum("vault_proxy_packets_total", 'direction="to_machine"'),
    packets_to_client: sum("vault_proxy_packets_total", 'direction="to_client"'),
    sessions_opened: sum("vault_proxy_sessions_opened_total"),
    drops: sum("vault_proxy_drops_total"),
    refusals: sum("vault_proxy_refusals_total"),
    drops_by_reason: byReason("vault_proxy_drops_total"),
  };
}

/**
 * The same machine reached directly and through vault-proxy (next to it, as on Fly: one hop on
 * the server's side of the link), in one run: `exec -- true` cold and forward bulk, alternating
 * so both see the same link. Ratios are proxied ÷ direct.
 */
async function proxyFigure() {
  const persist = await hasPersistentClient();
  const cold = (vault: string) => [
    ...flyVault,
    "exec",
    "-n",
    ...(persist ? ["--no-persist"] : []),
    vault,
    "--",
    "true",
  ];
  const before = await proxyCounters();
  await run(cold("proxied"), { env }); // attests and pins through the proxy
  const exec = { direct: [] as number[], proxied: [] as number[] };
  for (let i = 0; i < opts.execRounds; i++) {
    exec.direct.push((await run(cold("demo"), { env })).ms);
    exec.proxied.push((await run(cold("proxied"), { env })).ms);
  }
  const up = { direct: [] as number[], proxied: [] as number[] };
  const down = { direct: [] as number[], proxied: [] as number[] };
  await withForward("fly-vault", (direct) =>
    withForward("fly-vault", async (proxied) => {
      for (let r = 0; r < opts.proxyBulkRounds; r++) {
        // Odd rounds go proxied first: neither path always runs on a link the other just left.
        const order = r % 2 ? ["proxied", "direct"] as const : ["direct", "proxied"] as const;
        for (const reverse of [false, true]) {
          for (const which of order) {
            const mbit = await iperf("127.0.0.1", which === "direct" ? direct : proxied, reverse);
            (reverse ? down : up)[which].push(mbit);
          }
        }
      }
    }, "proxied"));
  const after = await proxyCounters();
  const { drops_by_reason: dropsAfter, ...countsAfter } = after;
  const relayed = {
    ...Object.fromEntries(
      Object.entries(countsAfter).map(([k, v]) => [k, v - before[k as keyof typeof countsAfter]]),
    ),
    drops_by_reason: Object.fromEntries(
      Object.entries(dropsAfter).map(([k, v]) => [k, v - (before.drops_by_reason[k] ?? 0)])
        .filter(([, v]) => v !== 0),
    ),
  };
  const mbit = (xs: number[]) => +median(xs).toFixed(1);
  return {
    exec_cold: {
      direct: stat(exec.direct),
      via_proxy: stat(exec.proxied),
      ratio_p50: ratio(median(exec.proxied), median(exec.direct)),
      added_p50_ms: +(median(exec.proxied) - median(exec.direct)).toFixed(1),
    },
    forward_bulk: {
      direct: { upload_mbit: mbit(up.direct), download_mbit: mbit(down.direct) },
      via_proxy: { upload_mbit: mbit(up.proxied), download_mbit: mbit(down.proxied) },
      ratio_upload: ratio(median(up.proxied), median(up.direct)),
      ratio_download: ratio(median(down.proxied), median(down.direct)),
      rounds: opts.proxyBulkRounds,
      seconds: opts.iperfSeconds,
      // Every run, in order: the spread between rounds is the noise a ratio stands against.
      samples_mbit: { upload: up, download: down },
    },
    relayed,
    udp: info.proxy.udp,
    notes:
      "ratios are through vault-proxy ÷ direct to the same machine (exec time: lower is better; throughput: higher is better). The proxy is bin/vault-proxy.ts in the server namespace beside init (one local hop after the link, as on Fly); `relayed` is what its metrics counted during the figure. Client, link emulator, proxy and machine share this host's cores.",
  };
}

// ---------------------------------------------------------------- provisioning

/**
 * A small tarball for short runs and slow links: a few files of random bytes (they do not
 * compress, so the tarball is about `bytes` long) and an /etc. Provisioning is the last
 * figure, so it need not be a rootfs one can run commands in.
 */
async function syntheticTarball(bytes: number): Promise<string> {
  const dir = join(work, "synthetic");
  await Deno.mkdir(join(dir, "etc"), { recursive: true });
  await Deno.mkdir(join(dir, "opt", "data"), { recursive: true });
  await Deno.writeTextFile(join(dir, "etc", "hostname"), "bench\n");
  const file = 256 * 1024;
  for (let i = 0; i * file < bytes; i++) {
    const data = new Uint8Array(Math.min(file, bytes - i * file));
    for (let off = 0; off < data.length; off += 65536) {
      crypto.getRandomValues(data.subarray(off, Math.min(data.length, off + 65536)));
    }
    await Deno.writeFile(join(dir, "opt", "data", `f${i}`), data);
  }
  const out = join(work, "synthetic.tar.gz");
  await run(["tar", "-czf", out, "--numeric-owner", "-C", dir, "."]);
  return out;
}

async function provisionFigure() {
  const tarball = opts.provision.tarball ?? await syntheticTarball(opts.provision.syntheticBytes);
  await writeConfig(tarball);
  const idle = async () => {
    // The replaced rootfs is removed in the background after a provision: let it finish first.
    const deadline = Date.now() + 120_000;
    while (
      Date.now() < deadline &&
      [...Deno.readDirSync(info.volumeDir)].some((e) => e.name.startsWith("rootfs.old-"))
    ) await new Promise((r) => setTimeout(r, 50));
    await run(["sync"]);
  };
  const fv: number[] = [];
  const viaSsh: number[] = [];
  for (let i = 0; i < opts.provision.rounds; i++) {
    await idle();
    fv.push((await run([...flyVault, "connect", "demo", "--reprovision"], { env })).ms);
    await run(["sync"]);
    const target = join(info.tarDir, `t${i}`);
    viaSsh.push(
      (await run([
        ...ssh,
        sshTarget,
        `mkdir ${target} && tar -xzf - --numeric-owner -p --xattrs --xattrs-include='*' -C ${target}`,
      ], { stdinFile: tarball })).ms,
    );
    await run(["rm", "-rf", target]);
  }
  await writeConfig();
  return {
    tarball_bytes: (await Deno.stat(tarball)).size,
    fly_vault_reprovision: stat(fv),
    ssh_tar: stat(viaSsh),
    ratio_p50_vs_ssh_tar: ratio(median(fv), median(viaSsh)),
    target: "<= 1.0x ssh+tar (wan, 93 MiB Debian)",
    notes:
      "fly-vault connect --reprovision (hash, upload over QUIC, verified extraction, syncfs, swap) against ssh host 'tar -xzf -' into a fresh directory on the same disk.",
  };
}

try {
  await writeConfig();
  const result: Record<string, unknown> = {};
  log("exec");
  result.exec = await execFigure();
  log("console echo");
  result.console_echo = await consoleFigure();
  const fwd = await forwardFigures();
  result.forward_bulk = fwd.bulk;
  result.parallel_requests = fwd.parallel_requests;
  log("through vault-proxy");
  result.proxy = await proxyFigure();
  log("provisioning");
  result.provision = await provisionFigure();
  console.log(JSON.stringify(result));
} finally {
  await Deno.remove(work, { recursive: true }).catch(() => {});
}
