/**
 * Issue 10 item 2 end to end: the persistent client (ssh's ControlMaster /
 * ControlPersist) with the real client binary against real init under flysim.
 * Commands share one master; output, exit codes and signals are the same with
 * and without it; a master killed mid-command fails that command cleanly and
 * the next one connects on its own; another uid cannot use the socket; an
 * idle master exits.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { ROOT, type Sim, startSim, vaultFor } from "./harness.ts";

const events = (lines: string[], event: string) =>
  lines.filter((l) => l.includes(`"event":"${event}"`)).map((l) => JSON.parse(l));

/** Waits (on file-system events in `dir`, never by sleeping) until `ready()` holds. */
async function until<T>(
  dir: string,
  ready: () => T | undefined | false,
  what: string,
  ms = 20_000,
): Promise<T> {
  const first = ready();
  if (first) return first;
  const watcher = Deno.watchFs(dir);
  const timer = setTimeout(() => watcher.close(), ms);
  try {
    for await (const _ of watcher) {
      const v = ready();
      if (v) return v;
    }
    const v = ready();
    if (v) return v;
    throw new Error(`timed out after ${ms} ms waiting for ${what}`);
  } finally {
    clearTimeout(timer);
    try {
      watcher.close();
    } catch { /* already */ }
  }
}

/** The run directory (XDG_RUNTIME_DIR/fly-vault) and what is in it. */
function runDir(xdg: string) {
  const dir = join(xdg, "fly-vault");
  const files = () => {
    try {
      return [...Deno.readDirSync(dir)].map((e) => e.name);
    } catch {
      return [];
    }
  };
  const socket = () => files().find((f) => f.endsWith(".sock"));
  const logLines = () => {
    const log = files().find((f) => f.endsWith(".log"));
    return log ? Deno.readTextFileSync(join(dir, log)).split("\n").filter(Boolean) : [];
  };
  return { dir, files, socket, logLines };
}

/** A sim with one vault; `persist` undefined leaves the key out (the default: on, 10 minutes). */
async function setup(persist: string | undefined) {
  const sim = await startSim();
  const id = `p${crypto.randomUUID().slice(0, 8).replace(/-/g, "")}`;
  const m = await sim.startMachine(id);
  const vault: Record<string, unknown> = vaultFor(sim, m, { persist });
  if (persist === undefined) delete vault.persist;
  await sim.writeConfig({ demo: vault });
  const xdg = join(sim.dir, "xdg");
  await Deno.mkdir(xdg, { mode: 0o700 });
  const env = { XDG_RUNTIME_DIR: xdg };
  const run = (args: string[], o: { stdin?: string } = {}, more: Record<string, string> = {}) =>
    sim.client(args, { ...o, env: { ...env, ...more } });
  return { sim, m, id, xdg, env, run, rd: runDir(xdg) };
}

/** Runs a first command, which leaves a master; resolves once the master listens. */
async function firstCommandLeavesMaster(
  run: Awaited<ReturnType<typeof setup>>["run"],
  rd: ReturnType<typeof runDir>,
) {
  assert.equal((await run(["exec", "-n", "demo", "--", "true"])).code, 0);
  await until(rd.dir, () => rd.logLines().some((l) => l.includes("master.listening")), "master");
}

/** This process's environment without the variables that make the client restart itself. */
const cleanEnv = () =>
  Object.fromEntries(
    Object.entries(Deno.env.toObject()).filter(([k]) =>
      !["DENO_CERT", "DENO_TLS_CA_STORE", "NODE_EXTRA_CA_CERTS"].includes(k)
    ),
  );

async function stopMaster(sim: Sim, env: Record<string, string>) {
  await sim.client(["master", "demo", "--stop"], { env });
}

Deno.test("persist (on by default): two commands share one master; output, exit codes and signals as without it", async () => {
  const { sim, m, env, run, rd } = await setup(undefined);
  try {
    const cases: Array<{ argv: string[]; stdin?: string }> = [
      { argv: ["exec", "--argv", "demo", "--", "sh", "-c", "echo out; echo err >&2; exit 3"] },
      { argv: ["exec", "demo", "--", "cat"], stdin: "through stdin\n" },
      { argv: ["exec", "--argv", "-n", "demo", "--", "sh", "-c", "kill -9 $$"] },
      { argv: ["exec", "--argv", "-n", "demo", "--", "sh", "-c", "kill -TERM $$"] },
      { argv: ["exec", "-n", "demo", "--", "/no/such/program"] },
    ];
    const direct = [];
    for (const c of cases) direct.push(await run(["--no-persist", ...c.argv], c));
    assert.equal(rd.files().length, 0, "--no-persist leaves no master");
    assert.equal(events(m.logs, "auth.attempt").length, cases.length);

    // The first command with persist on connects on its own and leaves a master.
    const first = await run(["-v", "exec", "-n", "demo", "--", "true"]);
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stderr, /started a master for demo/);
    await until(rd.dir, () => rd.logLines().some((l) => l.includes("master.listening")), "master");
    const authsBefore = events(m.logs, "auth.attempt").length;
    assert.equal(authsBefore, cases.length + 2, "the first command and its master");

    // Two client processes at once, through the master: no new connection, no new auth.
    const [a, b] = await Promise.all([
      run(["-v", "exec", "-n", "demo", "--", "echo", "a"]),
      run(["-v", "exec", "-n", "demo", "--", "echo", "b"]),
    ]);
    assert.deepEqual([a.code, a.stdout, b.code, b.stdout], [0, "a\n", 0, "b\n"]);
    assert.match(a.stderr, /using the master for demo \(pid \d+\)/);
    assert.match(b.stderr, /using the master for demo \(pid \d+\)/);
    assert.doesNotMatch(a.stderr + b.stderr, /attesting|fly-vault: authenticated$/m);
    assert.equal(events(m.logs, "auth.attempt").length, authsBefore, "no new authentication");
    assert.equal(events(rd.logLines(), "master.stream").length, 2);

    // Same bytes and statuses as without the master.
    for (const [i, c] of cases.entries()) {
      const via = await run(c.argv, c);
      assert.deepEqual(
        { code: via.code, stdout: via.stdout, stderr: via.stderr },
        { code: direct[i].code, stdout: direct[i].stdout, stderr: direct[i].stderr },
        `case ${c.argv.join(" ")}`,
      );
    }
    assert.equal(events(m.logs, "auth.attempt").length, authsBefore, "all through the master");
    assert.equal(direct[0].code, 3);
    assert.equal(direct[2].code, 137);
    assert.equal(direct[3].code, 143);

    // status (control stream through the master) and the master's own status / stop.
    const status = await run(["--json", "status", "demo"]);
    assert.equal(status.code, 0, status.stderr);
    assert.equal(JSON.parse(status.stdout).state, "ready");
    const check = await run(["--json", "master", "demo", "--status"]);
    assert.equal(check.code, 0, check.stderr);
    const info = JSON.parse(check.stdout);
    assert.equal(info.running, true);
    assert.equal(events(m.logs, "auth.attempt").length, authsBefore);
    const stop = await run(["master", "demo", "--stop"]);
    assert.equal(stop.code, 0, stop.stderr);
    assert.match(stop.stderr, new RegExp(`master for demo \\(pid ${info.pid}\\) stopped`));
    await until(rd.dir, () => !rd.socket() && "gone", "socket removed");
    const after = await run(["master", "demo", "--status"]);
    assert.equal(after.code, 1);
    assert.match(after.stderr, /no master running for demo/);
  } finally {
    await stopMaster(sim, env);
    await sim.close();
  }
});

Deno.test("persist: a master killed mid-command fails it cleanly; the next command connects on its own", async () => {
  const { sim, env, run, rd } = await setup("1m");
  try {
    await firstCommandLeavesMaster(run, rd);
    const pid = JSON.parse((await run(["--json", "master", "demo", "--status"])).stdout).pid;

    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "--quiet",
        join(ROOT, "bin", "fly-vault.ts"),
        "-v",
        "exec",
        "--argv",
        "-n",
        "demo",
        "--",
        "sh",
        "-c",
        "echo started; sleep 60",
      ],
      env: { FLY_VAULT_CONFIG_DIR: sim.configDir, NO_COLOR: "1", ...env },
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const out = child.stdout.getReader();
    const first = await out.read();
    assert.equal(new TextDecoder().decode(first.value), "started\n");
    const started = performance.now();
    Deno.kill(pid, "SIGKILL");
    const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
    const [status, stderr] = await Promise.all([
      child.status,
      new Response(child.stderr).text(),
      (async () => {
        while (!(await out.read()).done) { /* drain */ }
      })(),
    ]);
    clearTimeout(timer);
    assert.equal(status.code, 255, stderr);
    assert.match(stderr, /error\[(exec|transport)\.lost\]/);
    assert.ok(performance.now() - started < 5_000, "failed at once, no hang");

    // The dead master's socket is still there; the next command connects on its own.
    const next = await run(["-v", "exec", "-n", "demo", "--", "echo", "ok"]);
    assert.equal(next.code, 0, next.stderr);
    assert.equal(next.stdout, "ok\n");
    assert.match(next.stderr, /master for demo not usable/);
    assert.match(next.stderr, /started a master for demo/);
    await until(rd.dir, () => events(rd.logLines(), "master.listening").length === 2, "new master");
    const again = await run(["-v", "exec", "-n", "demo", "--", "echo", "again"]);
    assert.equal(again.stdout, "again\n");
    assert.match(again.stderr, /using the master for demo/);
  } finally {
    await stopMaster(sim, env);
    await sim.close();
  }
});

Deno.test("persist: another uid cannot use the master's socket, even with the directory opened", async () => {
  const { sim, xdg, env, run, rd } = await setup("1m");
  try {
    await firstCommandLeavesMaster(run, rd);
    const socket = join(rd.dir, rd.socket()!);
    assert.equal(Deno.statSync(rd.dir).mode! & 0o777, 0o700);
    assert.equal(Deno.statSync(socket).mode! & 0o777, 0o600);
    // nobody needs to reach the socket's directory at all for the second half of the test.
    await Deno.chmod(sim.dir, 0o711);
    await Deno.chmod(xdg, 0o711);
    const asNobody = async () => {
      const probe = `
        const path = Deno.args[0];
        let conn;
        try { conn = await Deno.connect({ transport: "unix", path }); }
        catch (e) { console.log("connect:" + e.name); Deno.exit(0); }
        // A hello frame; a master that served us would answer.
        const body = new TextEncoder().encode(JSON.stringify({ op: "status" }));
        const head = new Uint8Array(5); new DataView(head.buffer).setUint32(0, body.length + 1);
        try { await conn.write(head); await conn.write(body); } catch (e) { console.log("write:" + e.name); Deno.exit(0); }
        const buf = new Uint8Array(4096);
        const n = await conn.read(buf).catch((e) => { console.log("read:" + e.name); Deno.exit(0); });
        console.log(n === null ? "eof" : "answered:" + new TextDecoder().decode(buf.subarray(5, n)));
      `;
      const out = await new Deno.Command("setpriv", {
        args: [
          "--reuid=65534",
          "--regid=65534",
          "--clear-groups",
          Deno.execPath(),
          "eval",
          "--quiet",
          probe,
          socket,
        ],
        env: {
          DENO_DIR: join(sim.dir, "nobody-deno"),
          HOME: "/nonexistent",
          DENO_NO_UPDATE_CHECK: "1",
        },
        stdout: "piped",
        stderr: "piped",
      }).output();
      return new TextDecoder().decode(out.stdout).trim() + new TextDecoder().decode(out.stderr);
    };
    await Deno.mkdir(join(sim.dir, "nobody-deno"), { mode: 0o777 });
    await Deno.chmod(join(sim.dir, "nobody-deno"), 0o777);
    // The 0700 directory is the first line of defence.
    assert.equal(await asNobody(), "connect:PermissionDenied");
    // Opened up by mistake (directory and socket), the master still checks the peer's uid.
    await Deno.chmod(rd.dir, 0o711);
    await Deno.chmod(socket, 0o666);
    const opened = await asNobody();
    assert.ok(/^(eof|read:|write:)/.test(opened), opened);
    assert.deepEqual(events(rd.logLines(), "master.peer_refused").at(-1)?.uids, [65534]);
    // Our own commands still go through it, and a client tightens the directory again.
    const ours = await run(["-v", "exec", "-n", "demo", "--", "echo", "mine"]);
    assert.equal(ours.stdout, "mine\n");
    assert.match(ours.stderr, /using the master for demo/);
    assert.equal(Deno.statSync(rd.dir).mode! & 0o777, 0o700);
  } finally {
    await stopMaster(sim, env);
    await sim.close();
  }
});

Deno.test("persist: the master exits after its idle time, counted from the last client", async () => {
  const { sim, m, env, run, rd } = await setup("2s");
  try {
    await firstCommandLeavesMaster(run, rd);
    const t0 = performance.now();
    const via = await run([
      "-v",
      "exec",
      "--argv",
      "-n",
      "demo",
      "--",
      "sh",
      "-c",
      "sleep 3; echo slept",
    ]);
    assert.equal(via.stdout, "slept\n", via.stderr);
    assert.match(via.stderr, /using the master/, "a 3 s command outlives the 2 s idle time");
    const exit = await until(
      rd.dir,
      () => events(rd.logLines(), "master.exit")[0],
      "idle exit",
    );
    assert.equal(exit.why, "idle");
    assert.ok(performance.now() - t0 >= 5_000, "idle counted from the last stream closed");
    assert.equal(rd.socket(), undefined, "its socket is gone");
    assert.ok(events(m.logs, "auth.attempt").length === 2);
  } finally {
    await stopMaster(sim, env);
    await sim.close();
  }
});

Deno.test("persist: after the machine restarts, the next command goes on its own and re-attests", async () => {
  const { sim, m, id, env, run, rd } = await setup("1m");
  try {
    await firstCommandLeavesMaster(run, rd);
    assert.match(
      (await run(["-v", "exec", "-n", "demo", "--", "true"])).stderr,
      /using the master/,
    );
    await m.stop("SIGKILL");
    const back = await sim.startMachine(id); // same address, new identity
    const next = await run(["-v", "exec", "-n", "demo", "--", "echo", "back"]);
    assert.equal(next.code, 0, next.stderr);
    assert.equal(next.stdout, "back\n");
    assert.match(next.stderr, /attesting again/);
    assert.equal(events(back.logs, "attest.served").length >= 1, true);
  } finally {
    await stopMaster(sim, env);
    await sim.close();
  }
});

Deno.test("persist: a client killed mid-command through the master hangs up on the command, as ssh does", async () => {
  const { sim, env, run, rd } = await setup("1m");
  try {
    await firstCommandLeavesMaster(run, rd);
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "--quiet",
        join(ROOT, "bin", "fly-vault.ts"),
        "exec",
        "--argv",
        "demo",
        "--",
        "sh",
        "-c",
        'trap "echo hup > /tmp/hup.txt; exit 1" HUP; echo started; while :; do sleep 0.1; done',
      ],
      // Without the trust variables the client would restart itself, and SIGKILL would reach
      // only the parent that waits for it (src/client/trust.ts).
      env: { ...cleanEnv(), FLY_VAULT_CONFIG_DIR: sim.configDir, NO_COLOR: "1", ...env },
      clearEnv: true,
      stdin: "piped",
      stdout: "piped",
      stderr: "null",
    }).spawn();
    const out = child.stdout.getReader();
    assert.equal(new TextDecoder().decode((await out.read()).value), "started\n");
    child.kill("SIGKILL");
    await child.status;
    // The vault's side waits (bounded) for the hang-up to have been delivered.
    const seen = await run([
      "exec",
      "--argv",
      "-n",
      "demo",
      "--",
      "sh",
      "-c",
      "for i in $(seq 100); do [ -s /tmp/hup.txt ] && exec cat /tmp/hup.txt; sleep 0.05; done; exit 7",
    ]);
    assert.equal(seen.code, 0, "the command got SIGHUP within 5 s");
    assert.equal(seen.stdout, "hup\n");
    await out.cancel();
  } finally {
    await stopMaster(sim, env);
    await sim.close();
  }
});

Deno.test("persist: pipe (a forward stream) through the master keeps half-close: EOF up, the answer down", async () => {
  const { sim, run, env, rd } = await setup("1m");
  // Reads everything until EOF, then answers in capitals and closes: only a real half-close works.
  const upper = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (upper.addr as Deno.NetAddr).port;
  const accept = (async () => {
    for await (const conn of upper) {
      const chunks: Uint8Array[] = [];
      const buf = new Uint8Array(4096);
      while (true) {
        const n = await conn.read(buf);
        if (n === null) break;
        chunks.push(buf.slice(0, n));
      }
      const text = new TextDecoder().decode(new Uint8Array(chunks.flatMap((c) => [...c])));
      await conn.write(new TextEncoder().encode(text.toUpperCase()));
      conn.close();
    }
  })();
  try {
    await firstCommandLeavesMaster(run, rd);
    const piped = await run(["-v", "pipe", "demo", `127.0.0.1:${port}`], {
      stdin: "half closed\n",
    });
    assert.equal(piped.code, 0, piped.stderr);
    assert.equal(piped.stdout, "HALF CLOSED\n");
    assert.match(piped.stderr, /using the master for demo/);
    assert.equal(events(rd.logLines(), "master.stream").at(-1)?.tag, 5);
  } finally {
    upper.close();
    await accept.catch(() => {});
    await stopMaster(sim, env);
    await sim.close();
  }
});

Deno.test("persist: a forward through the master has loss detection: its heartbeats are the vault's echoes", async () => {
  const { sim, run, env, rd } = await setup("1m");
  try {
    await firstCommandLeavesMaster(run, rd);
    const free = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (free.addr as Deno.NetAddr).port;
    free.close();
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "--quiet",
        join(ROOT, "bin", "fly-vault.ts"),
        "-v",
        "forward",
        "demo",
        `127.0.0.1:${port}:127.0.0.1:9`,
      ],
      env: { ...cleanEnv(), FLY_VAULT_CONFIG_DIR: sim.configDir, NO_COLOR: "1", ...env },
      clearEnv: true,
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
    let seen = "";
    const lines = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
    while (!/heartbeat answered by demo/.test(seen)) {
      const { value, done } = await lines.read();
      if (done) break;
      seen += value;
    }
    child.kill("SIGTERM");
    await child.status;
    clearTimeout(timer);
    await lines.cancel().catch(() => {});
    assert.match(seen, /using the master for demo/);
    assert.match(seen, /heartbeat answered by demo in \d+ ms/);
  } finally {
    await stopMaster(sim, env);
    await sim.close();
  }
});

/** Starts the master with `knobs` (it inherits the first command's environment); waits for its exec-id probe. */
async function masterWith(knobs: Record<string, string>) {
  const s = await setup(undefined);
  const first = await s.run(["exec", "-n", "demo", "--", "true"], {}, knobs);
  assert.equal(first.code, 0, first.stderr);
  const probed = await until(
    s.rd.dir,
    () => events(s.rd.logLines(), "master.exec_ids")[0],
    "the master's exec-id probe",
  );
  assert.equal(probed.supported, true, "a current init takes exec ids");
  return s;
}

Deno.test("persist: an exec through the master pays no proof-of-life round trip, even with a stale proof", async () => {
  const { sim, m, env, run, rd } = await masterWith({ FLY_VAULT_TEST_MASTER_STALE: "1" });
  try {
    const auths = events(m.logs, "auth.attempt").length;
    const r = await run(["-v", "exec", "-n", "demo", "--", "echo", "fast"]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "fast\n");
    assert.match(r.stderr, /using the master for demo/);
    assert.equal(events(m.logs, "auth.attempt").length, auths, "went through the master");
    // The fast path: one unix round trip, no hello, forwarded at once with an exec id.
    assert.equal(events(rd.logLines(), "master.hello").length, 0);
    const streams = events(rd.logLines(), "master.stream");
    assert.deepEqual(streams.at(-1), { ...streams.at(-1), eager: true, fast: true });
    // The usual path (an -e command loads the client first): its hello asks for no proof either.
    const env2 = await run(["exec", "-n", "-e", "X=y", "demo", "--", "echo $X"]);
    assert.equal(env2.code, 0, env2.stderr);
    assert.equal(env2.stdout, "y\n");
    const hellos = events(rd.logLines(), "master.hello");
    assert.deepEqual(hellos.at(-1), { ...hellos.at(-1), eager: true, proof_first: false });
    assert.deepEqual(events(rd.logLines(), "master.stream").at(-1), {
      ...events(rd.logLines(), "master.stream").at(-1),
      eager: true,
      fast: false,
    });
    assert.equal(events(m.logs, "auth.attempt").length, auths, "went through the master");
    assert.equal(events(rd.logLines(), "master.proof").length, 0, "no proof for an exec");
    // Any other stream (here a pipe) still waits for a proof when the master's is stale.
    await run(["pipe", "demo", "127.0.0.1:9"], { stdin: "" });
    assert.deepEqual(events(rd.logLines(), "master.proof").map((e) => e.tag), [5]);
    // A command that needs the vault's state fresh still asks first.
    const st = await run(["status", "demo"]);
    assert.equal(st.code, 0, st.stderr);
    assert.equal(events(rd.logLines(), "master.hello").at(-1).proof_first, true);
  } finally {
    await stopMaster(sim, env);
    await sim.close();
  }
});

Deno.test("persist: an exec the master forwarded and then lost is sent again with its id and never runs twice", async () => {
  const { sim, env, run, rd } = await masterWith({ FLY_VAULT_TEST_MASTER_DROP: "1" });
  try {
    const r = await run(["-v", "exec", "-n", "demo", "--", "echo ran >> /root/once"]);
    // The vault got it through the master (which lost the answer) and again directly: it ran once.
    assert.match(r.stderr, /sending the command again \(same exec id\)/);
    assert.match(r.stderr, /exec\.duplicate/);
    assert.equal(r.code, 255);
    assert.equal(events(rd.logLines(), "master.stream").at(-1).eager, true);
    const seen = await run(["--no-persist", "exec", "-n", "demo", "--", "cat /root/once"]);
    assert.equal(seen.code, 0, seen.stderr);
    assert.equal(seen.stdout, "ran\n", "the side effect happened exactly once");
  } finally {
    await stopMaster(sim, env);
    await sim.close();
  }
});

Deno.test("persist: the master's fast name is bound to the bytes it was made from; a changed config.toml takes the usual path", async () => {
  const { sim, env, run, rd } = await masterWith({});
  try {
    const fast = await run(["exec", "-n", "demo", "--", "echo", "one"]);
    assert.equal(fast.code, 0, fast.stderr);
    assert.equal(events(rd.logLines(), "master.stream").at(-1).fast, true);
    const path = join(sim.configDir, "config.toml");
    await Deno.writeTextFile(path, "# edited\n" + await Deno.readTextFile(path));
    const usual = await run(["-v", "exec", "-n", "demo", "--", "echo", "two"]);
    assert.equal(usual.code, 0, usual.stderr);
    assert.equal(usual.stdout, "two\n");
    // The same vault identity (a comment changed nothing parsed): the same master, by its hello.
    assert.match(usual.stderr, /using the master for demo/);
    assert.equal(events(rd.logLines(), "master.stream").at(-1).fast, false);
    assert.equal(events(rd.logLines(), "master.hello").length, 1);
  } finally {
    await stopMaster(sim, env);
    await sim.close();
  }
});
