/**
 * Issue 10: the WAN harness (tools/linkem) and the WAN bench cannot rot.
 * Two namespaces joined by the link emulator are set up and torn down (none
 * left, a crashed run's swept), the link is shaped (RTT within 20% of the
 * `wan` profile's 40 ms, loss and rate as configured), and one very short
 * run of every bench figure produces numbers.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  listOurNamespaces,
  NS_PREFIX,
  PROFILES,
  startLink,
  sweepStale,
} from "../tools/linkem/mod.ts";
import { ROOT } from "./harness.ts";

async function inNs(argv: string[]): Promise<{ ok: boolean; out: string }> {
  const o = await new Deno.Command(argv[0], {
    args: argv.slice(1),
    stdout: "piped",
    stderr: "piped",
  }).output();
  const d = new TextDecoder();
  return { ok: o.success, out: d.decode(o.stdout) + d.decode(o.stderr) };
}

/** Parses ping's summary: sent, received, avg RTT. */
function pingSummary(out: string) {
  const counts = out.match(/(\d+) packets transmitted, (\d+) received/);
  const rtt = out.match(/= [\d.]+\/([\d.]+)\//);
  assert.ok(counts, out);
  return { sent: Number(counts[1]), received: Number(counts[2]), avg: rtt ? Number(rtt[1]) : NaN };
}

Deno.test({
  name: "linkem: wan link measures 40 ms RTT ±20%, loss and rate as configured, namespaces removed",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    // A namespace left by a crashed run (its PID can never be alive: above pid_max) is swept.
    const stale = `${NS_PREFIX}4194305-1-c`;
    assert.ok((await inNs(["ip", "netns", "add", stale])).ok);
    assert.ok((await sweepStale()).includes(stale));
    assert.ok(!(await listOurNamespaces()).includes(stale));

    const link = await startLink("wan");
    let names: string[] = [];
    try {
      names = [link.clientNs, link.serverNs];
      assert.deepEqual(names.filter((n) => !n.startsWith(NS_PREFIX)), []);
      // Only loopback and the link inside: nothing else is reachable from the namespace.
      const routes = await inNs(link.inNs(link.clientNs, ["ip", "route"]));
      assert.doesNotMatch(routes.out, /default/);
      const ping = await inNs(
        link.inNs(link.clientNs, ["ping", "-c", "20", "-i", "0.05", "-W", "2", link.serverIp]),
      );
      const s = pingSummary(ping.out);
      assert.ok(s.received >= 15, ping.out);
      const want = PROFILES.wan.rttMs;
      assert.ok(Math.abs(s.avg - want) <= 0.2 * want, `RTT ${s.avg} ms, want ${want} ±20%`);
    } finally {
      const stats = await link.close();
      assert.ok(stats.client_to_server.rx_packets >= 20, JSON.stringify(stats));
    }
    const left = await listOurNamespaces();
    assert.deepEqual(left.filter((n) => names.includes(n)), [], "namespaces removed");
    const links = await inNs(["ip", "-o", "link"]);
    assert.doesNotMatch(links.out, /fv[cs]\d+/, "tun devices gone with the emulator");

    // Loss: 10% each way on a fast link; 400 pings lose 1-(0.9)² ≈ 19% (loose bounds).
    const lossy = await startLink({
      name: "test-loss",
      rttMs: 2,
      jitterMs: 0,
      loss: 0.1,
      rateMbit: 0,
      queueMs: 0,
    }, { seed: 7 });
    try {
      const ping = await inNs(lossy.inNs(lossy.clientNs, [
        "ping",
        "-q",
        "-c",
        "400",
        "-i",
        "0.002",
        "-W",
        "1",
        lossy.serverIp,
      ]));
      const s = pingSummary(ping.out);
      const lost = 1 - s.received / s.sent;
      assert.ok(lost > 0.08 && lost < 0.32, `lost ${lost}`);
    } finally {
      const stats = await lossy.close();
      const dropped = stats.client_to_server.lost / stats.client_to_server.rx_packets;
      assert.ok(dropped > 0.05 && dropped < 0.15, JSON.stringify(stats));
    }

    // Rate: 30 Mbit/s of UDP offered to a 10 Mbit/s link arrives at about 10.
    const slow = await startLink({
      name: "test-rate",
      rttMs: 10,
      jitterMs: 0,
      loss: 0,
      rateMbit: 10,
      queueMs: 50,
    });
    try {
      const server = new Deno.Command("ip", {
        args: [
          "netns",
          "exec",
          slow.serverNs,
          "iperf3",
          "-s",
          "-1",
          "--forceflush",
          "-B",
          slow.serverIp,
        ],
        stdout: "piped",
        stderr: "null",
      }).spawn();
      const reader = server.stdout.pipeThrough(new TextDecoderStream()).getReader();
      let text = "";
      while (!text.includes("Server listening")) {
        const { value, done } = await reader.read();
        if (done) throw new Error(`iperf3 -s exited: ${text}`);
        text += value;
      }
      const run = await inNs(slow.inNs(slow.clientNs, [
        "iperf3",
        "-c",
        slow.serverIp,
        "-u",
        "-b",
        "30M",
        "-t",
        "2",
        "-J",
      ]));
      const report = JSON.parse(run.out.slice(run.out.indexOf("{")));
      const mbit = report.end.sum_received?.bits_per_second ?? report.end.sum.bits_per_second;
      assert.ok(mbit / 1e6 > 7 && mbit / 1e6 < 11, `received ${mbit / 1e6} Mbit/s`);
      while (!(await reader.read()).done) { /* until iperf3 -s -1 exits */ }
      await server.status;
    } finally {
      await slow.close();
    }
  },
});

Deno.test({
  name: "wan bench: one tiny run of every figure across the wan link yields numbers",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "fv-wan-test-" });
    try {
      const outFile = join(dir, "wan.json");
      const child = new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          "--quiet",
          join(ROOT, "bench", "wan_bench.ts"),
          "--tiny",
          "--out",
          outFile,
          "wan",
        ],
        stdout: "null",
        stderr: "piped",
      }).spawn();
      const run = await child.output();
      const log = new TextDecoder().decode(run.stderr);
      assert.ok(run.success, log);
      const report = JSON.parse(await Deno.readTextFile(outFile));
      const wan = report.profiles.wan;
      assert.ok(Math.abs(wan.measured_rtt_ms - 40) <= 8, `measured ${wan.measured_rtt_ms}`);
      const f = wan.figures;
      const positive = (x: unknown, what: string) =>
        assert.ok(typeof x === "number" && x > 0 && Number.isFinite(x), `${what}: ${x}`);
      positive(f.exec.ratio_p50_cold_vs_ssh, "exec ÷ ssh");
      positive(f.exec.ratio_p50_cold_vs_ssh_controlmaster, "exec ÷ ssh ControlMaster");
      // The persistent client's figure is a number once it exists, and says so until then.
      const persistent = f.exec.fly_vault_exec_persistent;
      if (typeof persistent === "string") assert.match(persistent, /^n\/a: /);
      else positive(persistent.ratio_p50_vs_ssh_controlmaster, "persistent ÷ ControlMaster");
      positive(f.console_echo.ratio_p50_vs_ssh_tt, "echo ÷ ssh -tt");
      positive(f.console_echo.ratio_p50_vs_mosh_predict_never, "echo ÷ mosh");
      // An echo across a 40 ms RTT takes at least one round trip (unless predicted locally).
      assert.ok(f.console_echo.fly_vault_connect.p50_ms >= 38, "echo crossed the link");
      assert.ok(f.console_echo.ssh_tt.p50_ms >= 38, "ssh echo crossed the link");
      positive(f.forward_bulk.ratio_upload_vs_ssh_L, "forward upload");
      positive(f.forward_bulk.ratio_download_vs_ssh_L, "forward download");
      positive(f.forward_bulk.ratio_upload_vs_bare_quic, "forward ÷ bare QUIC");
      positive(f.forward_bulk.bare_deno_quic_stream.throughput_cc.download_mbit, "bare QUIC bbr");
      assert.ok(f.forward_bulk.direct_across_link.upload_mbit < 230, "rate-limited at 200");
      assert.ok(wan.link_stats.client_to_server.rx_packets > 1000, "the traffic crossed linkem");
      positive(f.parallel_requests.ratio_p99_vs_ssh_L, "requests p99");
      positive(f.provision.ratio_p50_vs_ssh_tar, "provision");
      // Through vault-proxy (issue 11): numbers, and the proxy carried them (its own counters).
      positive(f.proxy.exec_cold.ratio_p50, "exec via proxy ÷ direct");
      positive(f.proxy.forward_bulk.ratio_upload, "forward upload via proxy ÷ direct");
      positive(f.proxy.forward_bulk.ratio_download, "forward download via proxy ÷ direct");
      assert.ok(f.proxy.relayed.packets_to_machine > 100, JSON.stringify(f.proxy.relayed));
      assert.ok(f.proxy.relayed.packets_to_client > 100, JSON.stringify(f.proxy.relayed));
      assert.equal(f.proxy.relayed.refusals, 0, JSON.stringify(f.proxy.relayed));
      const leftover = (await listOurNamespaces())
        .filter((n) => n.startsWith(`${NS_PREFIX}${child.pid}-`));
      assert.deepEqual(leftover, [], "the bench removed its namespaces");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
