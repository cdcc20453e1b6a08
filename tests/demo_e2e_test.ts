/**
 * A newcomer's path, typed into a real terminal: `npm start` on a fresh
 * state dir reaches a shell prompt in the vault (flysim, `tenant create` from
 * examples/tenant.template.toml, vault-proxy, the client through the proxy,
 * provisioning on first connect); a command runs; `~.` leaves. Then with
 * `npm run sim` up, a second sim and `demo:reset` refuse, and a console left
 * with `~.` is re-attached by the next `npm start` (same shell).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { outerTerminal } from "./console_term.ts";
import { ROOT } from "./harness.ts";

const DEMO = join(ROOT, "bin", "demo.ts");
const PROMPT = /root@vault:[^\r\n]*[#$] $/;

/** Reads a child's stdout until `re` matches, with a deadline. */
async function waitForLine(
  stream: ReadableStream<Uint8Array>,
  re: RegExp,
  ms: number,
): Promise<string> {
  let text = "";
  const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  const timer = setTimeout(() => reader.cancel(`timed out waiting for ${re}`), ms);
  try {
    while (!re.test(text)) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`ended (or timed out) without ${re}: ${text}`);
      text += value;
    }
    return text;
  } finally {
    clearTimeout(timer);
    reader.releaseLock();
  }
}

/** Pids whose environment holds `entry`, once none is left or after `ms` (whichever first). */
async function processesWithEnv(entry: string, ms: number): Promise<number[]> {
  const deadline = Date.now() + ms;
  while (true) {
    const found: number[] = [];
    for (const e of Deno.readDirSync("/proc")) {
      if (!/^\d+$/.test(e.name)) continue;
      try {
        const env = Deno.readFileSync(`/proc/${e.name}/environ`);
        if (new TextDecoder().decode(env).split("\0").includes(entry)) found.push(Number(e.name));
      } catch { /* gone meanwhile */ }
    }
    if (found.length === 0 || Date.now() > deadline) return found;
    await new Promise((r) => setTimeout(r, 50));
  }
}

function demoCommand(dir: string, args: string[]) {
  const env = Deno.env.toObject();
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--unstable-net", DEMO, ...args],
    cwd: ROOT,
    env: { ...env, FLY_VAULT_DEMO_DIR: dir, NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  });
}

Deno.test({
  name: "newcomer: npm start reaches a shell in the vault through the proxy; sim keeps sessions",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "fv-demo-e2e-" });
    const t = outerTerminal({ FLY_VAULT_DEMO_DIR: dir });
    let sim: Deno.ChildProcess | undefined;
    try {
      await t.waitFor(/outer\$ $/);
      t.type(`cd ${ROOT} && npm start\r`);
      const began = Date.now();
      const intro = await t.waitFor(PROMPT, 120_000);
      const fresh = Date.now() - began;
      for (
        const line of [
          /flysim up: Machines API http:\/\/127\.0\.0\.1:\d+/,
          /tenant create demo --template examples\/tenant\.template\.toml/,
          /tenant demo created: machine [0-9a-f]{14} .*volume vol_\w+ \(new\)/,
          /vault-proxy on 127\.0\.0\.1:\d+/,
          /attested machine [0-9a-f]{14} through the proxy/,
          /vault is unprovisioned/,
          /provisioning: uploading the rootfs/,
        ]
      ) assert.match(intro, line);
      t.type("echo hi-$((6*7))\r");
      await t.waitFor(/[\r\n]hi-42\r\n/, 15_000);
      await t.waitFor(PROMPT, 15_000);
      t.type("~.");
      await t.waitFor(/stopped; the volume is kept/, 15_000);
      await t.waitFor(/outer\$ $/, 30_000);

      // A warm start: the volume is kept, so no provisioning.
      t.type("npm start\r");
      const warmBegan = Date.now();
      const warm = await t.waitFor(PROMPT, 60_000);
      const warmMs = Date.now() - warmBegan;
      assert.match(warm, /volume vol_\w+ \(kept from the last run\)/);
      assert.match(warm, /vault is ready/);
      assert.doesNotMatch(warm, /provisioning:/);
      t.type("exit\r");
      await t.waitFor(/outer\$ $/, 30_000);
      console.log(`time to prompt: fresh ${fresh} ms, warm ${warmMs} ms`);

      // npm run sim in the background; then a second sim and a reset refuse.
      sim = demoCommand(dir, ["--sim"]).spawn();
      const simErr = sim.stderr.pipeTo(new WritableStream()).catch(() => {});
      await waitForLine(sim.stdout, /The demo vault is up/, 60_000);
      const second = await demoCommand(dir, ["--sim"]).output();
      assert.equal(second.code, 1);
      const secondErr = new TextDecoder().decode(second.stderr);
      assert.match(secondErr, new RegExp(`the demo is already running \\(pid ${sim.pid}\\)`));
      assert.match(secondErr, /hint: .*npm start/);
      assert.doesNotMatch(secondErr, /in use/i);
      const reset = await demoCommand(dir, ["--reset"]).output();
      assert.equal(reset.code, 1);
      assert.match(new TextDecoder().decode(reset.stderr), /the demo is running/);
      assert.ok((await Deno.stat(join(dir, "demo.json"))).isFile, "state kept");

      // npm start uses the running sim; ~. leaves the session, the next npm start re-attaches.
      t.type("npm start\r");
      const joined = await t.waitFor(PROMPT, 60_000);
      assert.match(joined, new RegExp(`using the demo already running \\(pid ${sim.pid}\\)`));
      t.type("MARK=kept-$((40+2))\r");
      await t.waitFor(PROMPT, 15_000);
      t.type("~.");
      await t.waitFor(/outer\$ $/, 30_000);
      t.type("npm start\r");
      await t.waitFor(/using the demo already running/, 60_000);
      t.mark();
      t.type("\recho got-$MARK\r");
      await t.waitFor(/got-kept-42/, 30_000);
      t.type("exit\r");
      await t.waitFor(/outer\$ $/, 30_000);

      sim.kill("SIGTERM");
      assert.equal((await sim.status).code, 0);
      await simErr;
      sim = undefined;
      assert.equal(
        await Deno.stat(join(dir, "demo.pid")).then(() => true, () => false),
        false,
        "the lock is released when the sim stops",
      );
    } finally {
      if (sim) {
        sim.kill("SIGKILL");
        await sim.status;
      }
      t.pty.kill();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test({
  name:
    "npm start -- exec on a fresh state provisions first; stdout and the exit status are the command's",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "fv-demo-exec-" });
    try {
      const out = await demoCommand(dir, [
        "exec",
        "--argv",
        "demo",
        "--",
        "sh",
        "-c",
        "echo out-$((6*7)); echo err >&2; exit 3",
      ]).output();
      const stderr = new TextDecoder().decode(out.stderr);
      assert.equal(out.code, 3, stderr);
      assert.equal(new TextDecoder().decode(out.stdout), "out-42\n");
      assert.match(stderr, /vault is unprovisioned/);
      assert.match(stderr, /provisioning: uploading the rootfs/);
      assert.match(stderr, /\nerr\n/);
      assert.equal(
        await Deno.stat(join(dir, "demo.pid")).then(() => true, () => false),
        false,
        "the lock is released on exit",
      );
      // The exec left a persistent client (persist defaults to 10 minutes); the demo ends it
      // with the sim instead of leaving it to idle against a vault that is gone.
      const left = await processesWithEnv(`FLY_VAULT_CONFIG_DIR=${join(dir, "client")}`, 5_000);
      assert.deepEqual(left, [], "no master outlives the demo");
    } finally {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
