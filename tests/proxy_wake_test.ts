/**
 * Wake on connect through vault-proxy (issue 11.3, proxy side; 11.5): flysim's
 * Machines API runs the real init, which suspends itself when idle. A plain
 * `fly-vault connect` through the proxy (no API token on the client) wakes it:
 * the proxy's route gets no answer, is looked up again, the machine is found
 * suspended and started through the Machines API, and the client's Initials
 * are replayed to it: the console started before the suspension is
 * re-attached with its shell variable. A machine that fails to start gives the
 * client a CONNECTION_CLOSE naming why, fast; a proxy with waking off tells the
 * client the machine is suspended. Prints the wake-on-connect time.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { startOidcIssuer } from "../src/flysim/oidc.ts";
import { createInitLauncher } from "../src/flysim/runner.ts";
import { startMachinesApi } from "../src/flysim/machines_api.ts";
import { createFlyClient } from "../src/admin/mod.ts";
import { cachedResolver, machinesApiResolver, startProxy } from "../src/proxy/mod.ts";
import { layRootfs, ROOT } from "./harness.ts";
import { outerTerminal } from "./console_term.ts";

const ORG = "test-org";
const APP = "vault-tenants";
const TOKEN = "wake-through-the-proxy-access";
const API_TOKEN = "proxy-api-token-for-the-wake-test";
const PROMPT = /root@vault:[^\r\n]*[#$] $/;
const IDLE = "3s";

async function runClient(configDir: string, args: string[]) {
  const started = performance.now();
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--quiet", join(ROOT, "bin", "fly-vault.ts"), ...args],
    env: { FLY_VAULT_CONFIG_DIR: configDir, NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return {
    code: out.code,
    stdout: dec.decode(out.stdout),
    stderr: dec.decode(out.stderr),
    ms: performance.now() - started,
  };
}

Deno.test({
  name:
    "proxy wake: connect through the proxy wakes a suspended vault (console re-attached); a failed start is a clear error",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "fv-proxy-wake-" });
    const issuer = await startOidcIssuer({ hostname: "127.0.0.1", port: 0 });
    const launcher = createInitLauncher({
      issuer,
      runDir: join(dir, "run"),
      env: { FLY_VAULT_IDLE_SUSPEND: IDLE },
    });
    const api = startMachinesApi({ token: API_TOKEN, launcher, dataDir: dir, org: ORG });
    const fly = createFlyClient({ apiBase: api.baseUrl, token: API_TOKEN, app: APP });
    const logs: Record<string, unknown>[] = [];
    // As vault-proxy runs it: cached lookups (a suspended machine's address stays cached).
    const proxy = await startProxy({
      listen: { hostname: "127.0.0.1", port: 0 },
      resolver: cachedResolver(
        machinesApiResolver({ url: api.baseUrl, app: APP, token: API_TOKEN, wake: true }),
      ),
      log: (e) => logs.push({ at: new Date().toISOString(), ...e }),
    });
    const noWake = await startProxy({
      listen: { hostname: "127.0.0.1", port: 0 },
      resolver: machinesApiResolver({ url: api.baseUrl, app: APP, token: API_TOKEN }),
      log: () => {},
    });
    // Without a cache: the client's first Initial finds the machine suspended (the usual case
    // after a long idle, when the cached route has long expired).
    const cold = await startProxy({
      listen: { hostname: "127.0.0.1", port: 0 },
      resolver: machinesApiResolver({ url: api.baseUrl, app: APP, token: API_TOKEN, wake: true }),
      log: () => {},
    });
    const configDir = join(dir, "client");
    let t: ReturnType<typeof outerTerminal> | undefined;
    try {
      const vol = await fly.createVolume({ name: "vault_data", region: "ord", size_gb: 1 });
      await layRootfs(api.state.volumes.get(vol.id)!.dir);
      const { id } = await fly.createMachine({
        name: "tenant-wake-proxy",
        region: "ord",
        config: {
          image: "registry.fly.io/vault-tenants/init:test",
          env: { ACCESS_TOKEN: TOKEN },
          mounts: [{ volume: vol.id, path: "/data" }],
        },
      });
      await fly.waitMachine(id, { state: "started", timeoutSec: 60 });
      await Deno.mkdir(configDir, { recursive: true });
      const vault = (name: string, port: number) => [
        `[vault.${name}]`,
        `address = "127.0.0.1:${port}"`,
        `org = "${ORG}"`,
        `app = "${APP}"`,
        `machine_id = "${id}"`,
        `access_token = "${TOKEN}"`,
        `oidc_issuer = "${issuer.baseUrl}"`,
        "local_simulation = true",
        'persist = "no"',
        "",
      ];
      await Deno.writeTextFile(
        join(configDir, "config.toml"),
        [
          ...vault("demo", proxy.port),
          ...vault("nowake", noWake.port),
          ...vault("cold", cold.port),
        ].join("\n"),
        { mode: 0o600 },
      );
      await Deno.chmod(join(configDir, "config.toml"), 0o600);

      // No FLY_API_TOKEN on the client side: only the proxy holds one.
      t = outerTerminal({ FLY_VAULT_CONFIG_DIR: configDir });
      const cli = `${Deno.execPath()} run -A --quiet ${join(ROOT, "bin", "fly-vault.ts")}`;
      await t.waitFor(/outer\$ $/);
      t.type(`${cli} connect demo\r`);
      await t.waitFor(PROMPT, 60_000);
      t.type("V=kept-through-proxy; echo set-$V\r");
      await t.waitFor(/set-kept-through-proxy/);
      await t.waitFor(PROMPT);
      t.type("\r~.");
      await t.waitFor(/outer\$ $/);
      await fly.waitMachine(id, { state: "suspended", timeoutSec: 30 });

      // A plain connect through the proxy wakes it and the console comes back as it was.
      const connectAt = performance.now();
      t.type(`${cli} connect demo\r`);
      await t.waitFor(PROMPT, 60_000);
      const wakeConnectMs = Math.round(performance.now() - connectAt);
      t.type("echo back-$V\r");
      await t.waitFor(/back-kept-through-proxy/);
      await t.waitFor(PROMPT);
      const starts = (await fly.machineEvents(id, 50)).reverse().filter((e) => e.type === "start");
      assert.deepEqual(starts.slice(-2).map((e) => `${e.status}/${e.source}`), [
        "starting/user",
        "started/flyd",
      ]);
      assert.equal(proxy.stats.events.woke, 1, JSON.stringify(proxy.stats));
      const woken = logs.find((e) => e.event === "machine_woken");
      assert.equal(woken?.from, "suspended");
      assert.ok(!JSON.stringify(logs).includes(API_TOKEN), "the API token is never logged");
      t.type("\r~.");
      await t.waitFor(/outer\$ $/);

      // The cold route: status through a proxy with no cached address wakes it on the first look.
      await fly.waitMachine(id, { state: "suspended", timeoutSec: 30 });
      const coldWake = await runClient(configDir, ["status", "cold"]);
      assert.equal(coldWake.code, 0, coldWake.stderr);
      assert.equal(cold.stats.events.woke, 1);
      const awake = await runClient(configDir, ["status", "cold"]);
      assert.equal(awake.code, 0, awake.stderr);

      // Waking off: the client hears the machine is suspended, at once, not a timeout.
      await fly.waitMachine(id, { state: "suspended", timeoutSec: 30 });
      const refused = await runClient(configDir, ["status", "nowake"]);
      assert.notEqual(refused.code, 0);
      assert.match(refused.stderr, /is suspended; this proxy does not wake machines/);
      assert.ok(refused.ms < 8_000, `refused after ${refused.ms} ms`);
      assert.equal((await fly.getMachine(id)).state, "suspended");

      // A machine that fails to start: a CONNECTION_CLOSE naming why, not a timeout.
      api.faults.push({ match: { method: "POST", pathRegex: "/start$" }, kind: "fail-start" });
      const failedAt = new Date().toISOString();
      const failed = await runClient(configDir, ["status", "demo"]);
      // On failure, what the proxy and the machine did meanwhile.
      const evidence = async () =>
        `${failed.stderr}\nclient started ${failedAt}\nproxy logs: ${
          JSON.stringify(logs.slice(-10))
        }\nproxy stats: ${JSON.stringify(proxy.stats)}\nmachine events: ${
          JSON.stringify((await fly.machineEvents(id, 6)).reverse())
        }`;
      assert.notEqual(failed.code, 0);
      if (!/waking machine [0-9a-f]+ failed: .*did not start \(failed/.test(failed.stderr)) {
        assert.fail(await evidence());
      }
      assert.ok(failed.ms < 10_000, `the failure took ${failed.ms} ms`);
      console.log(
        `proxy wake: connect through the proxy to a suspended vault reached the prompt in ` +
          `${wakeConnectMs} ms (machine start ${woken?.ms} ms, after the 1 s no-answer probe ` +
          `on a cached route); status through a cold proxy: ${Math.round(coldWake.ms)} ms ` +
          `suspended vs ${Math.round(awake.ms)} ms awake; ` +
          `a failed start was reported in ${Math.round(failed.ms)} ms; ` +
          `refused (waking off) in ${Math.round(refused.ms)} ms`,
      );
    } finally {
      t?.pty.kill("SIGKILL");
      await proxy.close();
      await noWake.close();
      await cold.close();
      await api.close();
      await issuer.close();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
