/**
 * Child process for bench/proxy_bench.ts, so client, proxy and server each
 * have their own event loop (as in production):
 *   proxy_child.ts echo <machine_id>                 QUIC echo server
 *   proxy_child.ts proxy <udp> <host> <port>         vault-proxy to that backend
 * Prints one JSON line when ready, then runs until killed.
 */
import { startProxy, type UdpImpl } from "../src/proxy/mod.ts";
import { startEchoServer } from "../tests/proxy_fixture.ts";

const [mode, a, b, c] = Deno.args;
if (mode === "echo") {
  const s = await startEchoServer(a);
  console.log(JSON.stringify({ port: s.port, caPem: s.identity.identityPem }));
} else if (mode === "proxy") {
  const proxy = await startProxy({
    listen: { hostname: "127.0.0.1", port: 0 },
    udp: a as UdpImpl,
    resolver: () => Promise.resolve({ ok: true, backend: { hostname: b, port: Number(c) } }),
    limits: {
      // The bench opens 10,000 sessions from one address to one machine: lift the per-source,
      // per-prefix and per-machine flood bounds (maxSessions still fits the open-file limit).
      maxSessions: 20_000,
      maxSessionsPerSource: 20_000,
      maxSessionsPerPrefix: 20_000,
      machineSessionsPerSecond: 1e6,
      machineSessionBurst: 1e6,
      handshakeTimeoutMs: 600_000,
      maxPending: 20_000,
      maxPendingPerSource: 20_000,
      maxPendingPerPrefix: 20_000,
      idleTimeoutMs: 600_000,
      initialsPerSecond: 1e6,
      initialBurst: 1e6,
    },
    log: () => {},
  });
  // Sessions on request: one line in, one line out, so the bench waits on an answer, not a timer.
  console.log(JSON.stringify({ port: proxy.port }));
  for await (const line of Deno.stdin.readable.pipeThrough(new TextDecoderStream())) {
    // "gc": collect garbage first, so memory figures count what is held, not what is litter.
    const gc = (globalThis as { gc?: () => void }).gc;
    if (line.startsWith("gc") && gc) {
      gc();
      gc();
    }
    console.log(JSON.stringify(proxy.stats));
  }
}
