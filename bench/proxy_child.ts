/**
 * Child process for bench/proxy_bench.ts, so client, proxy and server each
 * have their own event loop (as in production):
 *   proxy_child.ts echo <machine_id> [buffers]       QUIC echo server (listenQuic, as init)
 *   proxy_child.ts proxy <udp> <host> <port>         vault-proxy to that backend
 *   proxy_child.ts sink                              counts UDP datagrams ("?" → {count})
 *   proxy_child.ts blast <port> <sni> <bytes>        opens a session through the proxy at
 *                                                    <port>, then on "go <ms>" sends datagrams
 *                                                    as fast as it can for that long
 * Prints one JSON line when ready, then runs until killed.
 */
import { startProxy, type UdpImpl } from "../src/proxy/mod.ts";
import { bindMmsg, mmsgStats } from "../src/proxy/udp_mmsg.ts";
import { clientHello, clientInitials } from "../src/proxy/testutil.ts";
import { createMachineIdentity } from "../src/pki/mod.ts";
import { listenQuic } from "../src/transport/mod.ts";
import { endpointBuffers } from "./proxy_endpoint.ts";

/** Answers each line on stdin with `answer(line)` as one JSON line. */
async function serve(answer: (line: string) => unknown | Promise<unknown>) {
  for await (const chunk of Deno.stdin.readable.pipeThrough(new TextDecoderStream())) {
    for (const line of chunk.split("\n").filter(Boolean)) {
      console.log(JSON.stringify(await answer(line)));
    }
  }
}

/** CPU seconds this process has used (user + system). */
function cpuSeconds(): number {
  const f = Deno.readTextFileSync("/proc/self/stat").split(") ")[1].split(" ");
  return (Number(f[11]) + Number(f[12])) / 100; // utime, stime in clock ticks (USER_HZ 100)
}

/** Local ports of this process's UDP sockets (its fds' inodes, matched in /proc/net/udp{,6}). */
function ownUdpPorts(): number[] {
  const inodes = new Set<string>();
  for (const e of Deno.readDirSync("/proc/self/fd")) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(Deno.readLinkSync(`/proc/self/fd/${e.name}`));
      if (m) inodes.add(m[1]);
    } catch { /* closed since the listing */ }
  }
  const ports: number[] = [];
  for (const f of ["/proc/net/udp", "/proc/net/udp6"]) {
    for (const l of Deno.readTextFileSync(f).split("\n").slice(1)) {
      const x = l.trim().split(/\s+/);
      if (x.length > 9 && inodes.has(x[9])) ports.push(parseInt(x[1].split(":").at(-1)!, 16));
    }
  }
  return ports;
}

/** CPU seconds this process has spent in user mode (JS and libraries, not the kernel). */
function userSeconds(): number {
  return Number(Deno.readTextFileSync("/proc/self/stat").split(") ")[1].split(" ")[11]) / 100;
}

const [mode, a, b, c] = Deno.args;
if (mode === "echo") {
  // init's own listener (src/transport: BBR, tuned socket buffers); every stream echoes what
  // follows its tag byte.
  const identity = await createMachineIdentity({ machineId: a });
  const listener = listenQuic({
    hostname: "127.0.0.1",
    port: 0,
    certChainPem: identity.chainPem,
    keyPem: identity.leafKeyPem,
    idleTimeoutMs: 600_000,
  });
  (async () => {
    for await (const conn of listener.connections()) {
      (async () => {
        for await (const st of conn.incoming()) st.readable.pipeTo(st.writable).catch(() => {});
      })();
    }
  })();
  // "echo <id> <buffers>": "transport" keeps what listenQuic set; "kernel" puts back the kernel's
  // default (as before the transport tuned them); a number sets that many bytes.
  const port = listener.addr.port;
  const buffers = endpointBuffers(port, b ?? "transport");
  console.log(JSON.stringify({ port, caPem: identity.identityPem, buffers }));
} else if (mode === "sink") {
  let count = 0;
  const sock = await bindMmsg("127.0.0.1", 0, () => count++);
  console.log(JSON.stringify({ port: sock.port }));
  await serve(() => ({ count, cpu_s: cpuSeconds() }));
} else if (mode === "blast") {
  const to = Number(a);
  const sock = await bindMmsg("127.0.0.1", 0, () => {});
  const initial = clientInitials(clientHello({ sni: b }))[0];
  const data = new Uint8Array(Number(c)).fill(0x55);
  data[0] = 0x40; // a short-header packet: relayed once the session exists
  console.log(JSON.stringify({ port: sock.port }));
  await serve(async (line) => {
    if (line === "hello") return { sent: sock.send(initial, "127.0.0.1", to) };
    const ms = Number(line.split(" ")[1]);
    let sent = 0;
    const t0 = performance.now();
    while (performance.now() - t0 < ms) {
      // A stage's worth per turn (sends are flushed 512 at a time), then let the loop breathe.
      for (let i = 0; i < 512; i++) if (sock.send(data, "127.0.0.1", to)) sent++;
      await new Promise((r) => setTimeout(r, 0));
    }
    return { sent };
  });
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
  await serve((line) => {
    // "gc": collect garbage first, so memory figures count what is held, not what is litter.
    const gc = (globalThis as { gc?: () => void }).gc;
    if (line.startsWith("gc") && gc) {
      gc();
      gc();
    }
    // "upstream": the port of the (one) session's upstream socket, for queue sampling.
    const upstreamPort = line === "upstream"
      ? ownUdpPorts().find((p) => p !== proxy.port)
      : undefined;
    return {
      ...proxy.stats,
      cpu_s: cpuSeconds(),
      user_s: userSeconds(),
      mmsg: { ...mmsgStats },
      upstreamPort,
    };
  });
}
