/**
 * Loss detection end to end (issue 10.3): the real `fly-vault connect` in a
 * real PTY against a real init (flysim), through a UDP relay that loses every
 * packet for 5 s. The console must say so within 3 s (a status line, not
 * "connection lost" after QUIC's 10 s idle timeout), be back within 1 s of
 * the path returning, and keep the shell's state — and a line typed into the
 * dead path runs exactly once, neither lost nor repeated. Again for 12 s,
 * past QUIC's idle timeout, when the old connection is gone and a spare
 * takes over. And for `fly-vault forward` (no console: the connection's
 * heartbeat datagrams).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { tcpByteStream } from "../src/forward/mod.ts";
import { ROOT, startSim, vaultFor } from "./harness.ts";
import { outerTerminal } from "./console_term.ts";
import { startUdpRelay } from "./console_udp_relay.ts";

const PROMPT = /root@vault:[^\r\n]*[#$] $/;

/** The outage itself is the stimulus: its length is what is tested, not a synchronisation. */
function hold(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, Math.max(0, ms)));
}

/**
 * Connects a console through a relay, sets a shell variable, loses every packet for
 * `outageMs`, and checks the status line, the way back and the shell.
 */
async function consoleOutage(
  machineId: string,
  outageMs: number,
  expect: { newConnection?: boolean } = {},
): Promise<void> {
  const sim = await startSim();
  const m = await sim.startMachine(machineId);
  const [hostname, port] = [m.address.replace(/:\d+$/, ""), Number(m.address.split(":").pop())];
  const relay = startUdpRelay({ hostname, port });
  await sim.writeConfig({ demo: { ...vaultFor(sim, m), address: relay.address } });
  const t = outerTerminal({ FLY_VAULT_CONFIG_DIR: sim.configDir });
  const cli = `${Deno.execPath()} run -A --quiet ${join(ROOT, "bin", "fly-vault.ts")}`;
  try {
    await t.waitFor(/outer\$ $/);
    t.type(`${cli} connect demo\r`);
    await t.waitFor(PROMPT, 60_000);
    t.type("V=kept; echo set-$V\r");
    await t.waitFor(/set-kept/);
    await t.waitFor(PROMPT);

    relay.drop(true);
    const cut = performance.now();
    // Typed into the dead path before anyone noticed: must run once the path is back.
    t.type("echo during-$V\r");
    await t.waitFor(/no reply from demo for [\d.]+s — waiting \(~\. to quit\)/, 15_000);
    const noticed = performance.now() - cut;
    console.log(`dead path noticed after ${Math.round(noticed)} ms`);
    assert.ok(noticed <= 3_000, `the status line came ${Math.round(noticed)} ms after the cut`);

    await hold(outageMs - (performance.now() - cut));
    relay.drop(false);
    const restored = performance.now();
    const seen = await t.waitFor(/during-kept\r\n/, 15_000);
    const back = performance.now() - restored;
    const how = /reconnected to session/.test(seen) ? "on a new connection" : "on the same one";
    console.log(`console back ${Math.round(back)} ms after the path returned, ${how}`);
    assert.ok(back <= 1_000, `the console answered ${Math.round(back)} ms after the path returned`);
    if (expect.newConnection) assert.equal(how, "on a new connection");

    // The shell is the same one (its variable), and the dead-path line ran exactly once.
    t.type("echo after-$V\r");
    const after = await t.waitFor(/after-kept\r\n[\s\S]*vault:[^\r\n]*[#$] $/);
    const ran = (seen + after).match(/during-kept/g) ?? [];
    assert.equal(ran.length, 1, `the line typed into the outage ran ${ran.length} times`);

    t.type("\r~.");
    await t.waitFor(/outer\$ $/);
  } finally {
    t.pty.kill("SIGKILL");
    relay.close();
    await sim.close();
  }
}

Deno.test({
  name: "console loss: 5 s of 100% loss → status within 3 s → back within 1 s, shell state kept",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: () => consoleOutage("m0411", 5_000),
});

Deno.test({
  name: "console loss: 12 s, past QUIC's idle timeout → back within 1 s on a new connection",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: () => consoleOutage("m0413", 12_000, { newConnection: true }),
});

/** One line through a fresh TCP connection to `port`, answered by the echo server. */
async function echoThrough(port: number, line: string): Promise<string> {
  const s = tcpByteStream(await Deno.connect({ hostname: "127.0.0.1", port }));
  const w = s.writable.getWriter();
  await w.write(new TextEncoder().encode(line));
  await w.close();
  return await new Response(s.readable).text();
}

Deno.test({
  name: "forward loss: 5 s of 100% loss → reported within 3 s → forwarding again within 1 s",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const sim = await startSim();
    const target = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    (async () => {
      for await (const c of target) {
        const s = tcpByteStream(c);
        s.readable.pipeTo(s.writable).catch(() => {});
      }
    })().catch(() => {});
    const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const lport = (probe.addr as Deno.NetAddr).port;
    probe.close();
    const m = await sim.startMachine("m0412");
    const [hostname, port] = [m.address.replace(/:\d+$/, ""), Number(m.address.split(":").pop())];
    const relay = startUdpRelay({ hostname, port });
    await sim.writeConfig({ demo: { ...vaultFor(sim, m), address: relay.address } });
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "--quiet",
        join(ROOT, "bin", "fly-vault.ts"),
        "--verbose",
        "forward",
        "demo",
        `${lport}:127.0.0.1:${(target.addr as Deno.NetAddr).port}`,
      ],
      env: { FLY_VAULT_CONFIG_DIR: sim.configDir, NO_COLOR: "1" },
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    // Everything the client says on stderr, read as it comes.
    let log = "";
    let wake = () => {};
    const reading = (async () => {
      for await (const text of child.stderr.pipeThrough(new TextDecoderStream())) {
        log += text;
        wake();
      }
      wake();
    })();
    const waitLog = async (re: RegExp, ms: number) => {
      const until = performance.now() + ms;
      while (!re.test(log)) {
        const left = until - performance.now();
        if (left <= 0) throw new Error(`no ${re} within ${ms} ms: ${log}`);
        let timer: ReturnType<typeof setTimeout> | undefined;
        await new Promise<void>((r) => (wake = r, timer = setTimeout(r, left)));
        clearTimeout(timer);
      }
    };
    try {
      await waitLog(/forwarding/, 60_000);
      assert.equal(await echoThrough(lport, "before\n"), "before\n");
      // The vault echoes heartbeats: only then is silence news (an older init never answers).
      await waitLog(/heartbeat answered by demo/, 10_000);

      relay.drop(true);
      const cut = performance.now();
      await waitLog(/no reply from demo for [\d.]+s — waiting/, 15_000);
      const noticed = performance.now() - cut;
      console.log(`dead path noticed after ${Math.round(noticed)} ms`);
      assert.ok(noticed <= 3_000, `reported ${Math.round(noticed)} ms after the cut`);

      await hold(5_000 - (performance.now() - cut));
      relay.drop(false);
      const restored = performance.now();
      assert.equal(await echoThrough(lport, "after\n"), "after\n");
      const back = performance.now() - restored;
      const how = /reconnected to demo/.test(log) ? "on a new connection" : "on the same one";
      console.log(`forwarding again ${Math.round(back)} ms after the path returned, ${how}`);
      assert.ok(back <= 1_000, `forwarded ${Math.round(back)} ms after the path returned`);
    } finally {
      child.kill("SIGTERM");
      await child.status;
      await reading;
      target.close();
      relay.close();
      await sim.close();
    }
  },
});
