/**
 * The real client through the proxy survives an address change (issue 11.2):
 * `fly-vault forward` to a flysim machine running the real init, through
 * vault-proxy, behind a relay playing a NAT whose mapping changes twice in
 * the middle of a 10 MiB transfer. The forward carries on on the same QUIC
 * connection (the proxy keeps one session and moves it by DCID) and every
 * byte comes back.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { machinesApiResolver, startProxy } from "../src/proxy/mod.ts";
import { startFlysim } from "../src/flysim/mod.ts";
import { ROOT } from "./harness.ts";
import { createStartedMachine } from "./proxy_fixture.ts";
import { startRebindingRelay } from "./proxy_relays.ts";

const API_TOKEN = "flysim-rebind-token";
const ACCESS = "proxy-rebind-access";
const APP = "vault-tenants";

async function lineMatching(stream: ReadableStream<Uint8Array>, re: RegExp): Promise<string> {
  let text = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    text += chunk;
    if (re.test(text)) return text;
  }
  throw new Error(`stream ended without ${re}: ${text}`);
}

Deno.test({
  name: "proxy + real client: fly-vault forward survives two NAT rebinds during 10 MiB",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "fv-proxy-rebind-" });
    const sim = await startFlysim({ stateDir: dir, apiToken: API_TOKEN, org: "rebind-org" });
    const echo = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const serving = (async () => {
      for await (const conn of echo) conn.readable.pipeTo(conn.writable).catch(() => {});
    })();
    const logs: Record<string, unknown>[] = [];
    const proxy = await startProxy({
      listen: { hostname: "127.0.0.1", port: 0 },
      resolver: machinesApiResolver({ url: sim.api.baseUrl, app: APP, token: API_TOKEN }),
      log: (e) => logs.push(e),
    });
    const relay = startRebindingRelay({ hostname: "127.0.0.1", port: proxy.port });
    let forward: Deno.ChildProcess | undefined;
    try {
      const id = await createStartedMachine(
        { baseUrl: sim.api.baseUrl, app: APP, token: API_TOKEN },
        "tenant-rebind-1",
        { ACCESS_TOKEN: ACCESS },
      );

      const configDir = join(dir, "client");
      await Deno.mkdir(configDir);
      await Deno.writeTextFile(
        join(configDir, "config.toml"),
        `[vault.moving]
address = "127.0.0.1:${relay.port}"
org = "rebind-org"
app = "${APP}"
machine_id = "${id}"
access_token = "${ACCESS}"
oidc_issuer = "${sim.issuer.baseUrl}"
local_simulation = true
persist = "no"
`,
        { mode: 0o600 },
      );
      const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const localPort = (probe.addr as Deno.NetAddr).port;
      probe.close();
      const echoPort = (echo.addr as Deno.NetAddr).port;
      forward = new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          "--quiet",
          join(ROOT, "bin", "fly-vault.ts"),
          "-v",
          "forward",
          "moving",
          `127.0.0.1:${localPort}:127.0.0.1:${echoPort}`,
        ],
        env: { FLY_VAULT_CONFIG_DIR: configDir },
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      await lineMatching(forward.stderr, /Ctrl-C stops/);
      const openedBefore = proxy.stats.opened;
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: localPort });
      const size = 10 * 1024 * 1024;
      const payload = new Uint8Array(size);
      for (let o = 0; o < size; o += 65536) crypto.getRandomValues(payload.subarray(o, o + 65536));
      const w = conn.writable.getWriter();
      const sent = (async () => {
        for (let o = 0; o < size; o += 256 * 1024) {
          await w.write(payload.subarray(o, o + 256 * 1024));
        }
        await conn.closeWrite();
      })();
      const got = new Uint8Array(size);
      let n = 0;
      let rebinds = 0;
      const timer = setTimeout(() => conn.close(), 90_000);
      try {
        for await (const chunk of conn.readable) {
          got.set(chunk.subarray(0, Math.min(chunk.length, size - n)), n);
          n += chunk.length;
          if (rebinds < 2 && n >= ((rebinds + 1) * size) / 3) {
            relay.rebind();
            rebinds++;
          }
        }
      } finally {
        clearTimeout(timer);
      }
      await sent;
      assert.equal(rebinds, 2);
      assert.equal(n, size, "every byte came back");
      assert.ok(got.every((b, i) => b === payload[i]), "the bytes are the ones sent");
      assert.equal(proxy.stats.events.migrated, 2, JSON.stringify(proxy.stats));
      assert.equal(proxy.stats.opened, openedBefore, "no new session: the connection carried on");
      assert.equal(
        logs.filter((e) => e.event === "session_migrated").length,
        2,
      );
    } finally {
      forward?.kill("SIGINT");
      await forward?.status;
      await forward?.stdout.cancel().catch(() => {});
      await forward?.stderr.cancel().catch(() => {});
      relay.close();
      echo.close();
      await serving.catch(() => {});
      await proxy.close();
      await sim.close();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
