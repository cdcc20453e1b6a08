/**
 * The server side of the WAN bench, run inside the server namespace
 * (`ip netns exec fvbench-…-s`): flysim's OIDC issuer and one machine
 * running the real init (both on the namespace's link address, so the
 * client reaches them only across the emulated link), an sshd on the same
 * address, an iperf3 server and a small request/response server on the
 * namespace's loopback (the targets of forwards, as seen from the vault and
 * from sshd), and a bare QUIC stream server (the transport's ceiling). Prints one JSON line describing it all, then serves until its
 * stdin closes.
 *
 *   deno run -A bench/wan_server.ts ADDRESS
 *
 * @module
 */
import { join } from "node:path";
import { startOidcIssuer } from "../src/flysim/oidc.ts";
import { createInitLauncher } from "../src/flysim/runner.ts";
import { APP, layRootfs, ORG, TOKEN } from "../tests/harness.ts";
import { startSshd } from "../tests/sshd.ts";
import { serveBareQuic } from "./lib/bare_quic.ts";

const address = Deno.args[0] ?? "10.77.0.2";

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
  id: "bench01",
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
  tarDir: work,
  volumeDir,
}));

// Serve until the bench closes our stdin.
for await (const _ of Deno.stdin.readable) { /* nothing is sent; EOF ends the loop */ }
requests.close();
iperf.kill("SIGTERM");
await iperf.status;
await sshd.stop();
await machine.stop("SIGKILL");
await issuer.close();
await Deno.remove(dir, { recursive: true }).catch(() => {});
