/**
 * Scale to zero end to end (issue 11.3): flysim's Machines API runs the real
 * init; the real `fly-vault connect` in a real PTY starts a console, sets a
 * shell variable and starts a program, and leaves. With no client the vault
 * suspends itself through its token socket (flysim freezes its process tree:
 * state `suspended`, events `suspending` then `suspended`). A suspended vault
 * answers nothing: `status` says it may be suspended and how to wake it.
 * `connect --wake` starts it with the user's API token and re-attaches the
 * console with its shell state and its program still running. A wake of a
 * machine that fails to start is a clear error at once, not a timeout.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { startOidcIssuer } from "../src/flysim/oidc.ts";
import { createInitLauncher, type LaunchedMachine } from "../src/flysim/runner.ts";
import { startMachinesApi } from "../src/flysim/machines_api.ts";
import { createFlyClient } from "../src/admin/mod.ts";
import { layRootfs, ROOT } from "./harness.ts";
import { outerTerminal } from "./console_term.ts";

const ORG = "test-org";
const APP = "vault-tenants";
const TOKEN = "correct horse battery staple";
const API_TOKEN = "fly-api-token-for-the-wake-test";
const PROMPT = /root@vault:[^\r\n]*[#$] $/;
// Short enough for a test; long enough that a client which just woke the vault connects in time.
const IDLE = "4s";

async function runClient(configDir: string, args: string[], env: Record<string, string> = {}) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--quiet", join(ROOT, "bin", "fly-vault.ts"), ...args],
    env: { FLY_VAULT_CONFIG_DIR: configDir, NO_COLOR: "1", ...env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test({
  name:
    "suspend e2e: an idle vault suspends itself; connect --wake resumes it with the console's shell state",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "fv-suspend-" });
    const issuer = await startOidcIssuer({ hostname: "127.0.0.1", port: 0 });
    const launcher = createInitLauncher({
      issuer,
      runDir: join(dir, "run"),
      env: { FLY_VAULT_IDLE_SUSPEND: IDLE },
    });
    const api = startMachinesApi({ token: API_TOKEN, launcher, dataDir: dir, org: ORG });
    const fly = createFlyClient({ apiBase: api.baseUrl, token: API_TOKEN, app: APP });
    const configDir = join(dir, "client");
    let t: ReturnType<typeof outerTerminal> | undefined;
    try {
      const vol = await fly.createVolume({ name: "vault_data", region: "ord", size_gb: 1 });
      await layRootfs(api.state.volumes.get(vol.id)!.dir);
      const created = await fly.createMachine({
        name: "tenant-sleepy",
        region: "ord",
        config: {
          image: "registry.fly.io/vault-tenants/init:test",
          env: { ACCESS_TOKEN: TOKEN },
          mounts: [{ volume: vol.id, path: "/data" }],
        },
      });
      const id = created.id;
      await fly.waitMachine(id, { state: "started", timeoutSec: 60 });
      const machine = api.state.machines.get(id)!;
      const proc = () => machine.process as unknown as LaunchedMachine;
      await Deno.mkdir(configDir, { recursive: true });
      const config = [
        "[vault.demo]",
        `address = "${machine.private_ip}:8443"`,
        `org = "${ORG}"`,
        `app = "${APP}"`,
        `machine_id = "${id}"`,
        `access_token = "${TOKEN}"`,
        `oidc_issuer = "${issuer.baseUrl}"`,
        "local_simulation = true",
        // No master lingering after the client: it would hold a connection and keep it awake.
        'persist = "no"',
        "",
      ].join("\n");
      await Deno.writeTextFile(join(configDir, "config.toml"), config, { mode: 0o600 });
      await Deno.chmod(join(configDir, "config.toml"), 0o600);

      t = outerTerminal({ FLY_VAULT_CONFIG_DIR: configDir, FLY_API_TOKEN: API_TOKEN });
      const cli = `${Deno.execPath()} run -A --quiet ${join(ROOT, "bin", "fly-vault.ts")}`;
      await t.waitFor(/outer\$ $/);
      t.type(`${cli} connect demo\r`);
      await t.waitFor(PROMPT, 60_000);
      // A shell variable and a running program: both must outlive the suspension.
      t.type("V=kept; sleep 900 & P=$!; echo set-$V-$P\r");
      const set = await t.waitFor(/set-kept-(\d+)/);
      const sleeper = /set-kept-(\d+)/.exec(set)![1];
      await t.waitFor(PROMPT);
      // An attached console keeps the vault awake past its idle time (the wait is the remote
      // shell's: the test waits for its output).
      t.type("sleep 5; echo waited-$V\r");
      await t.waitFor(/waited-kept/, 30_000);
      await t.waitFor(PROMPT);
      assert.equal((await fly.getMachine(id)).state, "started");
      assert.ok(!(await fly.machineEvents(id, 50)).some((e) => e.type === "suspend"));
      t.type("\r~.");
      await t.waitFor(/outer\$ $/);
      const left = Date.now();

      // No client: after the idle time the vault suspends itself (the running sleep does not
      // keep it awake).
      await fly.waitMachine(id, { state: "suspended", timeoutSec: 30 });
      const idleToSuspended = Date.now() - left;
      assert.ok(idleToSuspended >= 3_000, `suspended ${idleToSuspended} ms after the client left`);
      const events = (await fly.machineEvents(id, 50)).reverse();
      const suspendEvents = events.filter((e) => e.type === "suspend");
      assert.deepEqual(
        suspendEvents.map((e) => `${e.status}/${e.source}`),
        ["suspending/user", "suspended/flyd"],
      );
      const suspendMs = suspendEvents[1].timestamp - suspendEvents[0].timestamp;
      assert.ok(
        proc().logs.some((l) => l.includes('"idle.suspend"')),
        "init logged why it suspended",
      );

      // Suspended: init answers nothing. status says what may be going on and how to wake it.
      const status = await runClient(configDir, ["--connect-timeout", "3", "status", "demo"]);
      assert.equal(status.code, 255, status.stderr);
      assert.match(status.stderr, /has not answered in 2 s: it may be suspended or stopped/);
      assert.match(
        status.stderr,
        /transport\.(timeout|unreachable)\].*may be suspended or stopped/,
      );
      assert.match(status.stderr, /fly-vault wake demo/);
      assert.equal((await fly.getMachine(id)).state, "suspended", "nobody woke it");

      // connect --wake: the user's API token starts it, then the console re-attaches.
      t.type(`${cli} connect demo --wake --api-base ${api.baseUrl}\r`);
      await t.waitFor(/waking demo \(machine [0-9a-f]+, suspended\)/, 30_000);
      const woke = await t.waitFor(/demo is started \(was suspended; (\d+) ms\)/, 30_000);
      const wakeMs = Number(/was suspended; (\d+) ms/.exec(woke)![1]);
      await t.waitFor(PROMPT, 60_000);
      t.type(`echo back-$V; kill -0 ${sleeper} && echo alive-${sleeper}\r`);
      await t.waitFor(/back-kept/);
      await t.waitFor(new RegExp(`alive-${sleeper}`));
      await t.waitFor(PROMPT);
      assert.ok(!t.since().includes(API_TOKEN));
      const resumed = (await fly.machineEvents(id, 50)).reverse();
      const starts = resumed.filter((e) => e.type === "start").slice(-2);
      assert.deepEqual(starts.map((e) => `${e.status}/${e.source}`), [
        "starting/user",
        "started/flyd",
      ]);
      const resumeMs = starts[1].timestamp - starts[0].timestamp;
      // The same init process carried on: no second boot.
      assert.equal(resumed.filter((e) => e.type === "start" && e.status === "started").length, 2);
      console.log(
        `suspend e2e: idle->suspended ${idleToSuspended} ms (idle ${IDLE}); ` +
          `suspend ${suspendMs} ms, resume ${resumeMs} ms under flysim (${proc().freezer}); ` +
          `fly-vault wake (API start + wait) ${wakeMs} ms`,
      );
      t.type("\r~.");
      await t.waitFor(/outer\$ $/);

      // A machine that cannot start: the wake says so at once, naming why.
      await fly.waitMachine(id, { state: "suspended", timeoutSec: 30 });
      api.faults.push({ match: { method: "POST", pathRegex: "/start$" }, kind: "fail-start" });
      const started = performance.now();
      const failed = await runClient(configDir, ["wake", "demo", "--api-base", api.baseUrl], {
        FLY_API_TOKEN: API_TOKEN,
      });
      const failMs = performance.now() - started;
      assert.equal(failed.code, 255);
      assert.match(failed.stderr, /wake\.failed/);
      assert.match(failed.stderr, /failed to start \(failed: failed to resume/);
      assert.ok(failMs < 15_000, `the failure took ${failMs} ms`);
      assert.ok(!failed.stderr.includes(API_TOKEN) && !failed.stdout.includes(API_TOKEN));

      // No token: a usage error that says where the token goes, not a network attempt.
      const noToken = await runClient(configDir, ["wake", "demo", "--api-base", api.baseUrl]);
      assert.equal(noToken.code, 2);
      assert.match(noToken.stderr, /FLY_API_TOKEN/);
      // A token Fly refuses: said so, in the client's terms, and never echoed.
      const wrong = await runClient(configDir, ["wake", "demo", "--api-base", api.baseUrl], {
        FLY_API_TOKEN: "not-the-token-4711",
      });
      assert.equal(wrong.code, 255);
      assert.match(wrong.stderr, /fly\.unauthorized[\s\S]*FLY_API_TOKEN must be a Fly API token/);
      assert.ok(!wrong.stderr.includes("4711") && !wrong.stdout.includes("4711"));
    } finally {
      t?.pty.kill("SIGKILL");
      await api.close();
      await issuer.close();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
