/**
 * Forward throughput: iperf3 through a fly-vault forward (real QUIC
 * transport; the init side in its own process) against `ssh -L` to an sshd
 * on loopback, and iperf3 direct as the ceiling, in the same run.
 *
 *   npx deno run -A bench/forward_bench.ts [SECONDS]
 *
 * Prints JSON.
 */
import { dialQuic } from "../src/transport/mod.ts";
import { startForward } from "../src/forward/mod.ts";
import { startSshd } from "../tests/sshd.ts";

const SECONDS = Number(Deno.args[0] ?? 5);

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

/** Runs iperf3 against `port`; returns received Gbit/s. `reverse` measures the download side. */
async function iperf(port: number, reverse = false): Promise<number> {
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
  return +(report.end.sum_received.bits_per_second / 1e9).toFixed(3);
}

const iperfPort = freePort();
const iperfServer = new Deno.Command("iperf3", {
  args: ["-s", "-B", "127.0.0.1", "-p", String(iperfPort)],
  stdout: "null",
  stderr: "null",
}).spawn();
await waitForPort(iperfPort);

const results: Record<string, unknown> = {
  bench: "forward throughput, iperf3 single stream (loopback)",
  seconds: SECONDS,
};
try {
  results.direct_gbps = { upload: await iperf(iperfPort), download: await iperf(iperfPort, true) };

  // fly-vault
  const server = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--quiet", new URL("./console_server.ts", import.meta.url).pathname],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const lines = server.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let first = "";
  while (!first.includes("\n")) first += (await lines.read()).value ?? "";
  const info = JSON.parse(first.split("\n")[0]);
  try {
    const conn = await dialQuic({
      address: `127.0.0.1:${info.port}`,
      serverName: info.serverName,
      caPem: info.caPem,
      timeoutMs: 5000,
    });
    const fwd = startForward((tag) => conn.openStream(tag), `0:127.0.0.1:${iperfPort}`);
    results.fly_vault_gbps = {
      upload: await iperf(fwd.addr.port),
      download: await iperf(fwd.addr.port, true),
    };
    await fwd.close();
    conn.close();
  } finally {
    server.kill("SIGTERM");
    await server.status;
  }

  // ssh -L
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
    results.ssh_L_gbps = { upload: await iperf(lport), download: await iperf(lport, true) };
  } finally {
    tunnel.kill("SIGTERM");
    await tunnel.status;
    await sshd.stop();
  }
  const fv = results.fly_vault_gbps as { upload: number; download: number };
  const ssh = results.ssh_L_gbps as { upload: number; download: number };
  results.ratio_fly_vault_over_ssh_L = {
    upload: +(fv.upload / ssh.upload).toFixed(3),
    download: +(fv.download / ssh.download).toFixed(3),
  };
  results.notes =
    "fly-vault: Deno QUIC (quinn) stream per TCP connection, client-side forward in this process, init side in another; ssh: OpenSSH default cipher. Same machine, same run.";
} finally {
  iperfServer.kill("SIGTERM");
  await iperfServer.status;
}
console.log(JSON.stringify(results, null, 2));
