/**
 * Every command line in README.md's ```sh blocks runs here, so an example
 * cannot drift from the program. The lines run as written, through bash, with
 * the program names on PATH as wrappers for `deno run -A --unstable-net
 * bin/NAME.ts` (and npm's own scripts); the only changes are the explicit
 * {@link SUBSTITUTIONS} (ports a shared loopback may have taken, the sim's
 * Machines API). The setup is the demo's own: `npm run sim` (flysim, `tenant
 * create`, vault-proxy, a real init machine with the demo rootfs, provisioned)
 * on a private `FLY_VAULT_DEMO_DIR`; the README's `my-dev` is the demo's vault
 * table under that name in a 0600 config; the admin's `acme` lines go to a
 * flysim Machines API. A line that needs real Fly is in {@link EXCLUDED} with
 * its reason; a README line in neither table fails the test.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { ROOT } from "./harness.ts";
import { APP, startSim as startMachinesApi, TOKEN as API_TOKEN } from "./admin_helpers.ts";
import { outerTerminal } from "./console_term.ts";
import { TRUST_ENV_VARS } from "../src/transport/trust_env.ts";

/** README lines that are not run, each with why. */
const EXCLUDED: Record<string, string> = {
  "npm ci && npm start":
    "npm ci reinstalls node_modules of this tree; npm start's console is tests/demo_e2e_test.ts",
  "npm test": "it is the whole suite, this test included",
  "npm run bench": "takes minutes; the benchmarks have their own runner (bench/run.ts)",
  "fly-vault build ./Dockerfile":
    "pulls debian:bookworm-slim from a registry (real network); build is tested in src/build/build_test.ts",
  "FLY_API_TOKEN=… fly-vault wake my-dev":
    "no --api-base: it goes to https://api.machines.dev (the sim's wake: tests/suspend_e2e_test.ts)",
  "vault-proxy --listen fly-global-services:443 --backend '{machine_id}.vm.vault-tenants.internal:8443' --machines-api https://api.machines.dev --app vault-tenants --admin 0.0.0.0:9090":
    "fly-global-services and api.machines.dev exist only on Fly",
};

/** The command lines of README.md's sh blocks: `\` continuations joined, `# …` tails cut. */
export function readmeCommandLines(readme: string): string[] {
  const lines: string[] = [];
  for (const block of readme.matchAll(/^```sh\n([\s\S]*?)^```$/gm)) {
    for (const raw of block[1].replace(/\s*\\\n\s*/g, " ").split("\n")) {
      const line = raw.replace(/(^|\s+)#(\s.*)?$/, "").trim();
      if (line) lines.push(line);
    }
  }
  return lines;
}

/** README lines this test neither runs nor excludes, and its lines the README no longer has. */
export function coverage(lines: string[], known: string[]) {
  return {
    missing: lines.filter((l) => !known.includes(l)),
    stale: known.filter((l) => !lines.includes(l)),
  };
}

const decoder = new TextDecoder();
const PROMPT = /root@vault:[^\r\n]*# $/;

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

function freeUdpPort(): number {
  const l = Deno.listenDatagram({ hostname: "127.0.0.1", port: 0, transport: "udp" });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** How a line is run and what it must do. */
type Run =
  | {
    how: "exit";
    code?: number;
    stdin?: string;
    env?: Record<string, string>;
    /** What stdout must match. */
    out?: RegExp;
    /** Run after the line in the same shell (its output joins stdout). */
    also?: string;
    check?: () => Promise<void>;
  }
  | { how: "pty"; ready: RegExp; readyMs?: number; check?: () => Promise<void>; leave: string }
  | { how: "process"; ready: RegExp; check?: () => Promise<void>; env?: Record<string, string> };

/** Reads a stream until `re` matches what it has said, with a deadline. */
async function readUntil(stream: ReadableStream<Uint8Array>, re: RegExp, ms: number) {
  let text = "";
  const reader = stream.getReader();
  const timer = setTimeout(() => reader.cancel(`timed out waiting for ${re}`), ms);
  try {
    while (!re.test(text)) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`ended (or timed out) without ${re}: ${text}`);
      text += decoder.decode(value, { stream: true });
    }
    return text;
  } finally {
    clearTimeout(timer);
    reader.releaseLock();
  }
}

/** A long-running line in its own process group (so its whole tree can be ended). */
function spawnGroup(line: string, env: Record<string, string>) {
  return new Deno.Command("setsid", {
    args: ["bash", "-c", `exec ${line} 2>&1`],
    cwd: ROOT,
    env,
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
}

async function endGroup(child: Deno.ChildProcess, signal: Deno.Signal = "SIGTERM") {
  try {
    Deno.kill(-child.pid, signal);
  } catch { /* gone */ }
  const timer = setTimeout(() => {
    try {
      Deno.kill(-child.pid, "SIGKILL");
    } catch { /* gone */ }
  }, 10_000);
  await child.stdout.cancel().catch(() => {});
  const status = await child.status;
  clearTimeout(timer);
  return status;
}

async function processesMatching(re: RegExp): Promise<number[]> {
  const pids: number[] = [];
  for await (const e of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    const cmdline = await Deno.readTextFile(`/proc/${e.name}/cmdline`).catch(() => "");
    if (re.test(cmdline.replaceAll("\0", " ").trim())) pids.push(Number(e.name));
  }
  return pids;
}

Deno.test("README: command lines are found in its sh blocks, comments and continuations handled", () => {
  const lines = readmeCommandLines(
    "```sh\nfoo a 'x'   # a comment\n          # only a comment\nbar --x \\\n  --y 1\n```\n" +
      "```toml\n[vault.x]\n```\n",
  );
  assert.deepEqual(lines, ["foo a 'x'", "bar --x --y 1"]);
  // A new README line with no entry fails; so does an entry whose line the README dropped.
  assert.deepEqual(coverage([...lines, "fly-vault new-thing"], [...lines, "gone"]), {
    missing: ["fly-vault new-thing"],
    stale: ["gone"],
  });
});

Deno.test({
  name: "README: every command line runs against the demo vault, or is excluded with a reason",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const readme = await Deno.readTextFile(join(ROOT, "README.md"));
    const lines = readmeCommandLines(readme);
    assert.ok(lines.length >= 30, `found ${lines.length} lines`);

    const dir = await Deno.makeTempDir({ prefix: "fv-readme-" });
    const demoDir = join(dir, "demo");
    const conf = join(dir, "client");
    const conf2 = join(dir, "client-add");
    const wrappers = join(dir, "bin");
    await Deno.mkdir(conf, { recursive: true, mode: 0o700 });
    await Deno.mkdir(conf2, { recursive: true, mode: 0o700 });
    await Deno.mkdir(wrappers);
    for (const p of ["fly-vault", "fly-vault-admin", "vault-proxy", "flysim"]) {
      const path = join(wrappers, p);
      await Deno.writeTextFile(
        path,
        `#!/bin/sh\nexec '${Deno.execPath()}' run -A --unstable-net --quiet '${
          join(ROOT, "bin", `${p}.ts`)
        }' "$@"\n`,
      );
      await Deno.chmod(path, 0o755);
    }
    const base = Deno.env.toObject();
    for (const name of TRUST_ENV_VARS) delete base[name];
    const env: Record<string, string> = {
      ...base,
      PATH: `${wrappers}:${join(ROOT, "node_modules", ".bin")}:${base.PATH ?? "/usr/bin:/bin"}`,
      FLY_VAULT_DEMO_DIR: demoDir,
      FLY_VAULT_CONFIG_DIR: conf,
      NO_COLOR: "1",
    };

    const api = await startMachinesApi();
    const ports = { console: freePort(), forward: freePort(), facts: freePort(), sshd: freePort() };
    const proxyPort = freeUdpPort();
    const key = join(dir, "id_ed25519");

    /** README text → what runs instead; each must be used (a stale one fails). */
    const SUBSTITUTIONS: Array<[string, string, string]> = [
      ["3000:localhost:3000", `${ports.console}:localhost:${ports.console}`, "a free port"],
      ["8080:localhost:8080", `${ports.forward}:localhost:${ports.forward}`, "a free port"],
      ["127.0.0.1:18083", `127.0.0.1:${ports.facts}`, "a free port"],
      ["127.0.0.1:4433", `127.0.0.1:${proxyPort}`, "a free UDP port"],
      ["http://127.0.0.1:4280", api.baseUrl, "the sim's Machines API"],
      ["-- vault-sshd", `-- vault-sshd -p ${ports.sshd}`, "a free port for the vault's sshd"],
      ["localhost:2222", `localhost:${ports.sshd}`, "the same port"],
      ["< ~/.ssh/id_ed25519.pub", `< ${key}.pub`, "the test's own key"],
      [
        "ssh -o ProxyCommand",
        `ssh -i ${key} -o UserKnownHostsFile=${join(dir, "known_hosts")} ` +
        "-o StrictHostKeyChecking=accept-new -o BatchMode=yes -o ProxyCommand",
        "the test's key, no prompts",
      ],
    ];
    const used = new Set<string>();
    const substitute = (line: string) => {
      let out = line;
      for (const [from, to] of SUBSTITUTIONS) {
        if (out.includes(from)) used.add(from);
        out = out.replaceAll(from, to);
      }
      return out;
    };
    const adminEnv = { FLY_API_BASE: api.baseUrl, FLY_API_TOKEN: API_TOKEN, FLY_APP: APP };

    const tcpAccepts = async (port: number) => {
      const c = await Deno.connect({ hostname: "127.0.0.1", port });
      c.close();
    };

    /** In the order they run. */
    const RUN: Array<[string, Run]> = [
      // The admin against flysim's Machines API.
      [
        'fly-vault-admin tenant create acme --template examples/tenant.template.toml --access-token "$(openssl rand -base64 32)" --org my-org',
        { how: "exit", env: adminEnv, out: /\[vault\.acme\][\s\S]*machine_id = / },
      ],
      [
        "fly-vault-admin tenant create acme --template examples/tenant.template.toml --dry-run",
        { how: "exit", env: adminEnv, out: /tvol_acme_1/ },
      ],
      ["fly-vault-admin tenant list --wide", { how: "exit", env: adminEnv, out: /acme/ }],
      [
        "fly-vault-admin tenant usage-facts --tenant acme",
        { how: "exit", env: adminEnv, out: /"machine_id"/ },
      ],
      [
        "fly-vault-admin tenant usage-facts --listen 127.0.0.1:18083 --bearer-token secret",
        {
          how: "process",
          env: adminEnv,
          ready: /listening on http:/,
          async check() {
            const r = await fetch(`http://127.0.0.1:${ports.facts}/usage-facts`, {
              headers: { authorization: "Bearer secret" },
            });
            assert.equal(r.status, 200);
            assert.match(await r.text(), /acme/);
          },
        },
      ],
      [
        "fly-vault-admin tenant update-image --image registry.fly.io/vault-tenants/init:latest --all-tenants",
        { how: "exit", env: adminEnv },
      ],
      ["fly-vault-admin tenant delete acme --yes", { how: "exit", env: adminEnv }],
      [
        "vault-proxy --listen 127.0.0.1:4433 --machines-api http://127.0.0.1:4280 --app vault-tenants",
        { how: "process", env: adminEnv, ready: /"event":"listening"/ },
      ],
      // The demo (npm run sim runs first as the setup; see below).
      ["npm start -- exec demo -- uname -a", { how: "exit", out: /^Linux /m }],
      // The client, as my-dev = the demo's vault.
      ["fly-vault connect my-dev", { how: "pty", ready: PROMPT, leave: "exit" }],
      [
        "fly-vault connect my-dev --forward 3000:localhost:3000",
        { how: "pty", ready: PROMPT, leave: "exit", check: () => tcpAccepts(ports.console) },
      ],
      [
        "fly-vault connect my-dev --new",
        { how: "pty", ready: PROMPT, leave: "exit" },
      ],
      ["fly-vault sessions my-dev", { how: "exit" }],
      ["fly-vault exec my-dev 'ls / | head -2'", { how: "exit", out: /^bin\n\w+\n$/ }],
      ["fly-vault exec my-dev ls -la /", { how: "exit", out: /root/ }],
      [
        `fly-vault exec --argv my-dev -- printf '%s\\n' "$x"`,
        { how: "exit", env: { x: "a  b; $HOME" }, out: /^a {2}b; \$HOME\n$/ },
      ],
      [
        "fly-vault exec -t my-dev -- htop",
        { how: "pty", ready: /Load average/, leave: "q" },
      ],
      [
        "fly-vault forward my-dev 8080:localhost:8080",
        {
          how: "process",
          ready: /forwarding .*Ctrl-C stops/,
          check: () => tcpAccepts(ports.forward),
        },
      ],
      [
        "fly-vault cp -r ./src my-dev:/root/src",
        { how: "exit", also: "fly-vault exec my-dev cat /root/src/client/cli.ts", out: /program/ },
      ],
      ["fly-vault status my-dev --json", { how: "exit", out: /"ready"/ }],
      ["fly-vault master my-dev --status", { how: "exit", out: /master for my-dev running/ }],
      ["fly-vault vaults", { how: "exit", out: /my-dev/ }],
      [
        "fly-vault config add my-dev --address '[fdaa:0:1::2]:8443' --org my-org --app my-dev-vault",
        {
          how: "exit",
          stdin: "a-token-of-at-least-32-characters-0123456789\n",
          env: { FLY_VAULT_CONFIG_DIR: conf2 },
          async check() {
            const path = join(conf2, "config.toml");
            assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
            const text = await Deno.readTextFile(path);
            assert.match(text, /^\[vault\.my-dev\]\naddress = "\[fdaa:0:1::2\]:8443"$/m);
            assert.match(text, /access_token = "a-token-of-at-least-32-characters-0123456789"/);
          },
        },
      ],
      [
        "source <(fly-vault completion bash)",
        { how: "exit", also: "complete -p fly-vault", out: /^complete .* fly-vault$/m },
      ],
      ["echo 'uname -a' | fly-vault connect my-dev", { how: "exit", out: /^Linux /m }],
      ["fly-vault exec my-dev -- vault-sshd", { how: "exit" }],
      [
        "fly-vault exec my-dev 'mkdir -p -m 700 ~/.ssh && cat >> ~/.ssh/authorized_keys' < ~/.ssh/id_ed25519.pub",
        { how: "exit" },
      ],
      [
        "ssh -o ProxyCommand='fly-vault pipe my-dev localhost:2222' root@my-dev",
        { how: "exit", stdin: "echo via-ssh-$((6*7)) $(id -un)\n", out: /via-ssh-42 root/ },
      ],
      [
        "fly-vault connect my-dev --reprovision",
        { how: "pty", ready: PROMPT, readyMs: 90_000, leave: "exit" },
      ],
      ["fly-vault forget my-dev", { how: "exit" }],
    ];
    const SETUP = ["npm run sim", "npm run demo:reset"];

    // Every README line is run or excluded (before anything starts, so a new line fails at once).
    const { missing, stale } = coverage(lines, [
      ...RUN.map(([l]) => l),
      ...SETUP,
      ...Object.keys(EXCLUDED),
    ]);
    assert.deepEqual(missing, [], "README lines with no test: add each to RUN or EXCLUDED");
    assert.deepEqual(stale, [], "lines in this test that the README no longer has");

    const runExit = async (line: string, r: Extract<Run, { how: "exit" }>) => {
      const child = new Deno.Command("bash", {
        args: ["-c", r.also ? `${substitute(line)}\n${r.also}` : substitute(line)],
        cwd: ROOT,
        env: { ...env, ...r.env },
        clearEnv: true,
        stdin: r.stdin === undefined ? "null" : "piped",
        stdout: "piped",
        stderr: "piped",
        signal: AbortSignal.timeout(60_000),
      }).spawn();
      if (r.stdin !== undefined) {
        const w = child.stdin.getWriter();
        await w.write(new TextEncoder().encode(r.stdin));
        await w.close();
      }
      const out = await child.output();
      const stdout = decoder.decode(out.stdout);
      const stderr = decoder.decode(out.stderr);
      assert.equal(out.code, r.code ?? 0, `${line}\nstdout: ${stdout}\nstderr: ${stderr}`);
      if (r.out) assert.match(stdout, r.out, `${line}\nstdout: ${stdout}\nstderr: ${stderr}`);
      await r.check?.();
    };

    let term: ReturnType<typeof outerTerminal> | undefined;
    const runPty = async (line: string, r: Extract<Run, { how: "pty" }>) => {
      if (!term) {
        term = outerTerminal({ ...env, TERM: "xterm-256color" });
        await term.waitFor(/outer\$ $/);
        term.type(`cd '${ROOT}'\r`);
        await term.waitFor(/outer\$ $/);
      }
      term.type(`${substitute(line)}\r`);
      await term.waitFor(r.ready, r.readyMs ?? 30_000);
      await r.check?.();
      term.type(r.leave === "exit" ? "exit\r" : r.leave);
      await term.waitFor(/outer\$ $/, 20_000);
      term.type("echo rc-$?\r");
      const rc = await term.waitFor(/rc-\d+/);
      assert.match(rc, /rc-0$/, line);
      await term.waitFor(/outer\$ $/);
    };

    const runProcess = async (line: string, r: Extract<Run, { how: "process" }>) => {
      const child = spawnGroup(substitute(line), { ...env, ...r.env });
      try {
        await readUntil(child.stdout, r.ready, 30_000);
        await r.check?.();
      } finally {
        await endGroup(child);
      }
    };

    const stopDemoMaster = () =>
      runExit("fly-vault master demo --stop", {
        how: "exit",
        env: { FLY_VAULT_CONFIG_DIR: join(demoDir, "client") },
      });

    const ran: string[] = [];
    let sim: Deno.ChildProcess | undefined;
    const started = performance.now();
    try {
      for (const [line, r] of RUN) {
        if (line === "npm start -- exec demo -- uname -a") {
          // The demo vault: `npm run sim` as the README says, kept up for the client's lines.
          sim = spawnGroup("npm run sim", env);
          await readUntil(sim.stdout, /The demo vault is up/, 90_000);
          sim.stdout.pipeTo(new WritableStream()).catch(() => {});
          ran.push("npm run sim");
          const table = await Deno.readTextFile(join(demoDir, "client", "config.toml"));
          assert.match(table, /^\[vault\.demo\]$/m);
          const path = join(conf, "config.toml");
          await Deno.writeTextFile(path, table.replace(/^\[vault\.demo\]$/m, "[vault.my-dev]"), {
            mode: 0o600,
          });
          await Deno.chmod(path, 0o600);
        }
        if (line === "fly-vault exec my-dev -- vault-sshd") {
          const gen = await new Deno.Command("ssh-keygen", {
            args: ["-q", "-t", "ed25519", "-N", "", "-f", key],
          }).output();
          assert.ok(gen.success); // the README's next line puts it in the vault
        }
        const t0 = performance.now();
        if (r.how === "exit") await runExit(line, r);
        else if (r.how === "pty") await runPty(line, r);
        else await runProcess(line, r);
        ran.push(line);
        console.log(`${Math.round(performance.now() - t0)} ms  ${line}`);
      }
      // The master the first command left behind (persist's default) ended with `forget`;
      // `npm start -- exec` left one for the demo's own config: it ends with the test.
      await runExit("fly-vault master my-dev --status", { how: "exit", code: 1 });
      await stopDemoMaster();
      await endGroup(sim!);
      sim = undefined;
      await runExit("npm run demo:reset", { how: "exit", out: /removed / });
      ran.push("npm run demo:reset");
    } finally {
      term?.pty.kill("SIGKILL");
      if (sim) {
        await runExit("fly-vault master my-dev --stop", { how: "exit" }).catch(() => {});
        await stopDemoMaster().catch(() => {});
        await endGroup(sim, "SIGKILL");
      }
      for (const pid of await processesMatching(new RegExp(`sshd -e -p ${ports.sshd}( |$)`))) {
        try {
          Deno.kill(pid, "SIGKILL");
        } catch { /* gone */ }
      }
      await api.close();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
    console.log(
      `README: ${ran.length} lines ran in ${Math.round((performance.now() - started) / 1000)} s; ` +
        `${Object.keys(EXCLUDED).length} excluded`,
    );
    assert.deepEqual(
      [...new Set(ran)].sort(),
      lines.filter((l) => !(l in EXCLUDED)).sort(),
      "every line not excluded ran",
    );
    assert.deepEqual(
      SUBSTITUTIONS.map(([from]) => from).filter((f) => !used.has(f)),
      [],
      "substitutions the README no longer needs",
    );
  },
});
