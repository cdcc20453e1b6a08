/**
 * Issue 2 end to end: the real client against real init processes over QUIC
 * on loopback, through attestation (flysim's issuer), pin and auth.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { startSim, TOKEN, vaultFor } from "./harness.ts";

const logEvents = (logs: string[], event: string) =>
  logs.filter((l) => l.includes(`"event":"${event}"`)).map((l) => JSON.parse(l));

Deno.test("exec: output, stdin, exit codes 0, 1 and 137, and not-provisioned", async () => {
  const sim = await startSim();
  try {
    const m = await sim.startMachine("m0001");
    const bare = await sim.startMachine("m0002", { provisioned: false });
    await sim.writeConfig({ demo: vaultFor(sim, m), bare: vaultFor(sim, bare) });

    const ok = await sim.client([
      "exec",
      "--argv",
      "demo",
      "--",
      "sh",
      "-c",
      "echo out; echo err >&2; exit 0",
    ]);
    assert.equal(ok.stdout, "out\n");
    assert.equal(ok.stderr, "err\n");
    assert.equal(ok.code, 0);

    const piped = await sim.client(["exec", "demo", "--", "cat"], { stdin: "hello through stdin" });
    assert.equal(piped.stdout, "hello through stdin");
    assert.equal(piped.code, 0);

    assert.equal((await sim.client(["exec", "-n", "demo", "--", "false"])).code, 1);
    const killed = await sim.client([
      "exec",
      "--argv",
      "-n",
      "demo",
      "--",
      "sh",
      "-c",
      "kill -9 $$",
    ]);
    assert.equal(killed.code, 137);
    const uname = await sim.client(["exec", "-n", "demo", "--", "uname", "-s"]);
    assert.equal(uname.stdout, "Linux\n");

    const none = await sim.client(["exec", "-n", "bare", "--", "true"]);
    assert.equal(none.code, 255);
    assert.match(none.stderr, /error\[vault\.not_provisioned\]/);
    assert.match(none.stderr, /hint: /);
  } finally {
    await sim.close();
  }
});

Deno.test("a pinned vault reconnects without attesting; after a restart it attests again by itself", async () => {
  const sim = await startSim();
  try {
    let m = await sim.startMachine("m0003");
    await sim.writeConfig({ demo: vaultFor(sim, m) });
    const first = await sim.client(["exec", "-v", "-n", "demo", "--", "true"]);
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stderr, /attesting demo \(first contact\)/);
    const known = await Deno.readTextFile(join(sim.configDir, "known_vaults"));
    assert.match(known, new RegExp(`^demo ${m.address.replace(/\./g, "\\.")} `, "m"));
    assert.equal((await Deno.stat(join(sim.configDir, "known_vaults"))).mode! & 0o777, 0o600);

    const second = await sim.client(["exec", "-v", "-n", "demo", "--", "true"]);
    assert.equal(second.code, 0);
    assert.doesNotMatch(second.stderr, /attesting/);
    assert.equal(logEvents(m.logs, "attest.served").length, 1, "only the first connect attested");

    await m.stop();
    m = await sim.startMachine("m0003"); // same address and volume, new identity
    const third = await sim.client(["exec", "-v", "-n", "demo", "--", "echo", "back"]);
    assert.equal(third.code, 0, third.stderr);
    assert.equal(third.stdout, "back\n");
    assert.match(third.stderr, /no longer matches .*attesting again/);
    assert.equal(logEvents(m.logs, "attest.served").length, 1);
  } finally {
    await sim.close();
  }
});

Deno.test("a wrong access token is refused clearly, and repeated failures slow down", async () => {
  const sim = await startSim();
  try {
    const m = await sim.startMachine("m0004");
    await sim.writeConfig({ demo: vaultFor(sim, m, { access_token: "wrong" }) });
    const times: number[] = [];
    for (let i = 0; i < 4; i++) {
      const r = await sim.client(["exec", "-n", "demo", "--", "true"]);
      assert.equal(r.code, 255);
      assert.match(r.stderr, /error\[auth\.denied\]: the access token was not accepted/);
      assert.doesNotMatch(r.stderr + r.stdout, /wrong/, "the token is never echoed");
      times.push(r.ms);
    }
    const attempts = logEvents(m.logs, "auth.attempt");
    assert.deepEqual(attempts.map((a) => a.ok), [false, false, false, false]);
    assert.deepEqual(attempts.map((a) => a.delayed_ms), [0, 250, 500, 1000]);
    assert.ok(times[3] >= 1000, `init held the 4th attempt 1 s: ${times.map(Math.round)}`);
    assert.ok(!m.logs.some((l) => l.includes("wrong") || l.includes(TOKEN)), "tokens never logged");

    await sim.writeConfig({ demo: vaultFor(sim, m) });
    const good = await sim.client(["exec", "-n", "demo", "--", "true"]);
    assert.equal(good.code, 0, "the right token still gets in");
  } finally {
    await sim.close();
  }
});

Deno.test("config mistakes are one line with a hint", async () => {
  const sim = await startSim();
  try {
    await Deno.writeTextFile(join(sim.configDir, "config.toml"), '[vault.demo]\naddress = "x\n');
    const syntax = await sim.client(["exec", "-n", "demo", "--", "true"]);
    assert.equal(syntax.code, 255);
    assert.match(syntax.stderr, /error\[config\.syntax\]: .*config\.toml:2:\d+/);
    await sim.writeConfig({ other: { address: "127.0.0.1:1", org: "o", app: "a" } });
    const unknown = await sim.client(["exec", "-n", "demo", "--", "true"]);
    assert.match(
      unknown.stderr,
      /error\[config\.unknown_vault\].*\nhint: configured vaults: other/,
    );
    await sim.writeConfig({
      demo: {
        address: "127.0.0.1:9",
        org: "o",
        app: "a",
        access_token: "t",
        oidc_issuer: sim.issuer.baseUrl,
        local_simulation: true,
      },
    });
    const unreachable = await sim.client([
      "--connect-timeout",
      "1",
      "exec",
      "-n",
      "demo",
      "--",
      "true",
    ]);
    assert.equal(unreachable.code, 255);
    // Nothing listens on port 9: the system says so (ICMP port unreachable), and we fail at once.
    assert.match(unreachable.stderr, /error\[transport\.refused\]/);
    await sim.writeConfig({ demo: { address: "127.0.0.1:9", org: "o", app: "a", adress: "x" } });
    const typo = await sim.client(["exec", "-n", "demo", "--", "true"]);
    assert.match(
      typo.stderr,
      /error\[config\.unknown_key\]: .*config\.toml:\d+:\d+: \[vault\.demo\] has an unknown key 'adress'\nhint: .*address/,
    );
  } finally {
    await sim.close();
  }
});
