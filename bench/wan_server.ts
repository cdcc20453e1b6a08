/**
 * The server side of the WAN bench, run inside the server namespace
 * (`ip netns exec fvbench-…-s`): flysim's OIDC issuer and one machine
 * running the real init (both on the namespace's link address, so the
 * client reaches them only across the emulated link), an sshd on the same
 * address, an iperf3 server and a small request/response server on the
 * namespace's loopback (the targets of forwards, as seen from the vault and
 * from sshd), a bare QUIC stream server (the transport's ceiling), and
 * vault-proxy (the real program, in its own process) in front of the
 * machine, as users reach machines across the internet. Prints one JSON line
 * describing it all, then serves until its stdin closes.
 *
 *   deno run -A bench/wan_server.ts ADDRESS
 *
 * @module
 */
import { join } from "node:path";
import { startOidcIssuer } from "../src/flysim/oidc.ts";
import { createInitLauncher } from "../src/flysim/runner.ts";
import { APP, layRootfs, ORG, ROOT, TOKEN } from "../tests/harness.ts";
import { startSshd } from "../tests/sshd.ts";
import { serveBareQuic } from "./lib/bare_quic.ts";

const address = Deno.args[0] ?? "10.77.0.2";
const MACHINE_ID = "bench01";

function freePort(hostname: string): number {
  const l = Deno.listen({ hostname, port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/**
 * Request/response: each request is a line with a byte count; the answer is that many bytes.
 * Connections stay open for more requests (keep-alive), as HTTP/1.1 clients use them.
 */
function serveRequests(): { port: number; close(): void } {
  // On every address: the bench also asks it directly across the link, as the baseline.
  const listener = Deno.listen({ hostname: "0.0.0.0", port: 0 });
  const body = new Uint8Array(1 << 20).fill(120);
  (async () => {
    for await (const conn of listener) {
      (async () => {
        const buf = new Uint8Array(256);
        let pending = "";
        try {
          while (true) {
            const n = await conn.read(buf);
            if (n === null) break;
            pending += new TextDecoder().decode(buf.subarray(0, n));
            let nl;
            while ((nl = pending.indexOf("\n")) >= 0) {
              const size = Math.min(body.length, Number(pending.slice(0, nl)) || 0);
              pending = pending.slice(nl + 1);
              let off = 0;
              while (off < size) off += await conn.write(body.subarray(off, size));
            }
          }
        } catch { /* the client went away */ }
        try {
          conn.close();
        } catch { /* closed */ }
      })();
    }
  })().catch(() => {});
  return { port: (listener.addr as Deno.NetAddr).port, close: () => listener.close() };
}

/**
 * bin/vault-proxy.ts on the link address, finding the machine through a Machines API on this
 * namespace's loopback (a stub that knows the one machine: `private_ip` is init's address, and
 * the proxy adds port 8443, where init listens). Its admin server (metrics) is on the link
 * address too, so the client can read what the proxy relayed. Resolves once both listen.
 */
async function startVaultProxy() {
  const api = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    if (new URL(req.url).pathname === `/v1/apps/${APP}/machines/${MACHINE_ID}`) {
      return Response.json({ id: MACHINE_ID, state: "started", private_ip: address });
    }
    return new Response("no such machine", { status: 404 });
  });
  const host = address.includes(":") ? `[${address}]` : address;
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--quiet",
      join(ROOT, "bin", "vault-proxy.ts"),
      "--listen",
      `${host}:0`,
      "--admin",
      `${host}:0`,
      "--machines-api",
      `http://127.0.0.1:${api.addr.port}`,
      "--app",
      APP,
      "--no-wake",
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  // Its log is JSON lines on stdout: wait (bounded) for both listening lines; then keep reading,
  // passing on errors (a bug or an exhaustion would skew the figure).
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let pending = "";
  let port = 0;
  let adminPort = 0;
  let udp = "";
  const deadline = Date.now() + 60_000;
  const portOf = (a: string) => Number(a.slice(a.lastIndexOf(":") + 1));
  while (!port || !adminPort) {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const { value, done } = await Promise.race([
      lines.read(),
      new Promise<never>((_, rej) => {
        timer = setTimeout(
          () => rej(new Error("vault-proxy did not listen in 60 s")),
          Math.max(0, deadline - Date.now()),
        );
      }),
    ]).finally(() => clearTimeout(timer));
    if (done) throw new Error("vault-proxy exited before it listened");
    pending += value;
    let nl;
    while ((nl = pending.indexOf("\n")) >= 0) {
      const line = pending.slice(0, nl);
      pending = pending.slice(nl + 1);
      const e = JSON.parse(line);
      if (e.event === "listening") [port, udp] = [portOf(e.address), e.udp];
      if (e.event === "admin_listening") adminPort = portOf(e.address);
    }
  }
  (async () => {
    let rest = pending;
    while (true) {
      const { value, done } = await lines.read();
      if (done) break;
      rest += value;
      let nl;
      while ((nl = rest.indexOf("\n")) >= 0) {
        const line = rest.slice(0, nl);
        rest = rest.slice(nl + 1);
        if (/"event":"error"/.test(line)) console.error(`  vault-proxy: ${line.slice(0, 500)}`);
      }
    }
  })().catch(() => {});
  return {
    info: { port, adminPort, udp, machineId: MACHINE_ID },
    async stop() {
      child.kill("SIGTERM");
      await child.status;
      await api.shutdown();
    },
  };
}

const dir = await Deno.makeTempDir({ prefix: "fv-wan-server-" });
const issuer = await startOidcIssuer({ hostname: address, port: 0 });
const launcher = createInitLauncher({
  issuer,
  runDir: join(dir, "run"),
  allocateIp: () => address,
});
const volumeDir = join(dir, "volumes", "bench01");
await layRootfs(volumeDir);
const machine = await launcher.start({
  id: MACHINE_ID,
  name: "tenant-bench01",
  app: APP,
  org: ORG,
  region: "ord",
  image: "registry.fly.io/vault-tenants/init:test",
  env: { ACCESS_TOKEN: TOKEN },
  volumeDir,
});
const sshd = await startSshd({ hostname: address });
const iperfPort = freePort("127.0.0.1");
const iperf = new Deno.Command("iperf3", {
  args: ["-s", "-p", String(iperfPort), "--forceflush"],
  stdout: "piped",
  stderr: "piped",
}).spawn();
// Its errors (a reset control connection, a stuck test) go to the bench's log.
for (const out of [iperf.stdout, iperf.stderr]) {
  (async () => {
    for await (const line of out.pipeThrough(new TextDecoderStream())) {
      for (const l of line.split("\n")) if (/error/i.test(l)) console.error(`  iperf3 -s: ${l}`);
    }
  })().catch(() => {});
}
const requests = serveRequests();
const bareQuic = await serveBareQuic(address);
// The iperf3 server is ready once it listens (a probe connection would confuse it).
for (let i = 0; i < 500; i++) {
  try {
    Deno.listen({ hostname: "127.0.0.1", port: iperfPort }).close();
  } catch {
    break;
  }
  await new Promise((r) => setTimeout(r, 10));
}
const proxy = await startVaultProxy();
const work = join(dir, "tar");
await Deno.mkdir(work);
console.log(JSON.stringify({
  machineAddress: machine.address,
  issuer: issuer.baseUrl,
  org: ORG,
  app: APP,
  sshdPort: sshd.port,
  sshOptions: sshd.options,
  iperfPort,
  requestPort: requests.port,
  bareQuic,
  proxy: proxy.info,
  tarDir: work,
  volumeDir,
}));

// Serve until the bench closes our stdin.
for await (const _ of Deno.stdin.readable) { /* nothing is sent; EOF ends the loop */ }
await proxy.stop();
requests.close();
iperf.kill("SIGTERM");
await iperf.status;
await sshd.stop();
await machine.stop("SIGKILL");
await issuer.close();
await Deno.remove(dir, { recursive: true }).catch(() => {});
