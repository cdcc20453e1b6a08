/**
 * vault-proxy against flysim's own Machines API (the `--machines-api` path):
 * a machine created through the API runs the real init; the proxy finds it
 * by machine id through the API; the real client attests through the proxy
 * and carries a TCP forward through it. Run on the JS data path (deno) and on
 * the batched one (mmsg, issue 11.1).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { machinesApiResolver, mmsgStats, startProxy, type UdpImpl } from "../src/proxy/mod.ts";
import { startFlysim } from "../src/flysim/mod.ts";
import { ROOT } from "./harness.ts";
import { createStartedMachine } from "./proxy_fixture.ts";

const API_TOKEN = "flysim-test-token";
const ACCESS = "proxy-forward-token";
const APP = "vault-tenants";

async function lineMatching(stream: ReadableStream<Uint8Array>, re: RegExp): Promise<string> {
  let text = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    text += chunk;
    if (re.test(text)) return text;
  }
  throw new Error(`stream ended without ${re}: ${text}`);
}

for (const udp of ["deno", "mmsg"] as UdpImpl[]) {
  Deno.test({
    name: `proxy (${udp}) + flysim Machines API: attest, status and a forward through the proxy`,
    sanitizeResources: false,
    sanitizeOps: false,
    fn: () => viaFlysim(udp),
  });
}

async function viaFlysim(udp: UdpImpl) {
  const batched = mmsgStats.recvCalls;
  const dir = await Deno.makeTempDir({ prefix: "fv-proxy-flysim-" });
  const sim = await startFlysim({ stateDir: dir, apiToken: API_TOKEN, org: "proxy-org" });
  const echo = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const serving = (async () => {
    for await (const conn of echo) conn.readable.pipeTo(conn.writable).catch(() => {});
  })();
  const proxy = await startProxy({
    listen: { hostname: "127.0.0.1", port: 0 },
    udp,
    resolver: machinesApiResolver({ url: sim.api.baseUrl, app: APP, token: API_TOKEN }),
    log: () => {},
  });
  let forward: Deno.ChildProcess | undefined;
  try {
    const id = await createStartedMachine(
      { baseUrl: sim.api.baseUrl, app: APP, token: API_TOKEN },
      "tenant-proxy-1",
      { ACCESS_TOKEN: ACCESS },
    );

    const configDir = join(dir, "client");
    await Deno.mkdir(configDir);
    await Deno.writeTextFile(
      join(configDir, "config.toml"),
      `[vault.viaproxy]
address = "127.0.0.1:${proxy.port}"
org = "proxy-org"
app = "${APP}"
machine_id = "${id}"
access_token = "${ACCESS}"
oidc_issuer = "${sim.issuer.baseUrl}"
local_simulation = true
`,
      { mode: 0o600 }, // it holds an access token: the client refuses it readable by others
    );
    const cli = (args: string[]) =>
      new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", "--quiet", join(ROOT, "bin", "fly-vault.ts"), ...args],
        env: { FLY_VAULT_CONFIG_DIR: configDir },
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      });

    const status = await cli(["status", "--json", "viaproxy"]).output();
    const text = new TextDecoder().decode(status.stdout);
    assert.equal(status.code, 0, new TextDecoder().decode(status.stderr));
    assert.equal(JSON.parse(text).machine_id, id, "attested through the proxy, right machine");

    const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const localPort = (probe.addr as Deno.NetAddr).port;
    probe.close();
    const echoPort = (echo.addr as Deno.NetAddr).port;
    forward = cli(["-v", "forward", "viaproxy", `127.0.0.1:${localPort}:127.0.0.1:${echoPort}`])
      .spawn();
    await lineMatching(forward.stderr, /Ctrl-C stops/);
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: localPort });
    const payload = new Uint8Array(256 * 1024);
    for (let off = 0; off < payload.length; off += 65536) {
      crypto.getRandomValues(payload.subarray(off, off + 65536));
    }
    const w = conn.writable.getWriter();
    const sent = w.write(payload).then(() => conn.closeWrite());
    const got: number[] = [];
    for await (const chunk of conn.readable) got.push(...chunk);
    await sent;
    assert.equal(got.length, payload.length);
    assert.deepEqual(new Uint8Array(got), payload, "bytes came back through the proxy unchanged");
    assert.ok(proxy.stats.opened >= 2, JSON.stringify(proxy.stats));
    // The batched path served the proxy's sockets (each wake drains with recvmmsg), and only
    // when chosen.
    if (udp === "mmsg") assert.ok(mmsgStats.recvCalls > batched, "recvmmsg was never called");
    else assert.equal(mmsgStats.recvCalls, batched);
  } finally {
    forward?.kill("SIGINT");
    await forward?.status;
    await forward?.stdout.cancel().catch(() => {});
    echo.close();
    await serving.catch(() => {});
    await proxy.close();
    await sim.close();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}
