/**
 * fly-vault-admin end to end against flysim's Machines API: two tenants go
 * through create → list → usage-facts → update-image → delete with the real
 * CLI, and every usage fact is checked against flysim's own records.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import type { SimMachine } from "../src/flysim/machines_api.ts";
import { admin, APP, ROOT, startSim, template, tenantState, TOKEN } from "./admin_helpers.ts";

/** An access token long enough for `tenant create` (32 characters at least). */
const tokenOf = (tenant: string) => `tok-${tenant}-0123456789abcdef0123456789abcdef`;

function expectedFact(m: SimMachine, sizes: Map<string, number>) {
  const last = (status: string) => {
    const ts = m.events.filter((e) => e.status === status).map((e) => e.timestamp);
    return ts.length ? Math.max(...ts) : undefined;
  };
  const started = last("started");
  let stopped = last("stopped");
  if (stopped !== undefined && started !== undefined && stopped < started) stopped = undefined;
  const destroyed = last("destroyed");
  const iso = (t?: number) => (t === undefined ? null : new Date(t).toISOString());
  return {
    machine_id: m.id,
    state: m.state,
    region: m.region,
    instance_id: m.instance_id,
    started_at: iso(started),
    stopped_at: iso(stopped),
    deleted_at: iso(destroyed),
    metadata: m.config.metadata,
    volumes: (m.config.mounts ?? []).map((x) => ({
      volume_id: x.volume,
      size_gib: sizes.get(x.volume) ?? x.size_gb,
    })),
  };
}

Deno.test("two tenants: create, list, usage-facts, update-image, delete", async () => {
  const sim = await startSim();
  try {
    const tpl = join(sim.dir, "tenant.template.toml");
    await Deno.writeTextFile(tpl, template(2));
    const sizes = new Map<string, number>();

    for (const tenant of ["acme", "globex"]) {
      const r = await admin(sim, [
        "tenant",
        "create",
        tenant,
        "--template",
        tpl,
        "--access-token",
        tokenOf(tenant),
        "--json",
      ]);
      assert.equal(r.code, 0, r.stderr);
      const out = JSON.parse(r.stdout);
      assert.equal(out.machines.length, 2);
      assert.ok(out.machines.every((m: { state: string }) => m.state === "started"));
      const { machines, volumes } = tenantState(sim, tenant);
      assert.equal(machines.length, 2);
      assert.equal(volumes.length, 2);
      for (const m of machines) {
        assert.equal(m.state, "started");
        assert.equal(m.config.env?.ACCESS_TOKEN, tokenOf(tenant));
        const i = m.config.metadata?.fly_vault_index;
        assert.equal(m.name, `tenant-${tenant}-${i}`);
        const v = volumes.find((x) => x.attached_machine_id === m.id)!;
        assert.equal(v.name, `tvol_${tenant}_${i}`);
        assert.equal(m.config.mounts?.[0].volume, v.id);
        sizes.set(v.id, v.size_gb);
      }
      assert.ok(!r.stdout.includes(tokenOf(tenant)) && !r.stderr.includes(TOKEN));
    }

    // Re-running create changes nothing.
    const again = await admin(sim, [
      "tenant",
      "create",
      "acme",
      "--template",
      tpl,
      "--access-token",
      tokenOf("x"),
    ]);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /0 created, 2 already there/);
    assert.equal(sim.state.machines.size, 4);
    assert.equal(sim.state.volumes.size, 4);

    // list: JSON for scripts, a table for people.
    const list = await admin(sim, ["tenant", "list", "--json"]);
    assert.equal(list.code, 0, list.stderr);
    const tenants = JSON.parse(list.stdout);
    assert.deepEqual(tenants.map((t: { tenant: string }) => t.tenant), ["acme", "globex"]);
    for (const t of tenants) {
      assert.deepEqual(t.machines.map((m: { index: number }) => m.index), [1, 2]);
      for (const m of t.machines) {
        const sm = sim.state.machines.get(m.id)!;
        assert.equal(m.state, sm.state);
        assert.equal(m.image, sm.config.image);
        assert.deepEqual(m.volumes, [sm.config.mounts![0].volume]);
      }
    }
    const table = await admin(sim, ["tenant", "list"]);
    assert.match(table.stdout, /^TENANT\s+MACHINES\s+STATES/);
    assert.match(table.stdout, /\nacme\s+2\s+started\s+ord/);
    const wide = await admin(sim, ["tenant", "list", "--wide"]);
    assert.equal(wide.stdout.trim().split("\n").length, 5);

    // Stop one machine so facts carry a stop as well.
    const acme1 = tenantState(sim, "acme").machines.find((m) =>
      m.config.metadata?.fly_vault_index === "1"
    )!;
    const stop = await fetch(`${sim.baseUrl}/v1/apps/${APP}/machines/${acme1.id}/stop`, {
      method: "POST",
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    await stop.body?.cancel();
    assert.equal(acme1.state, "stopped");

    const checkFacts = async (args: string[], count: number) => {
      const r = await admin(sim, ["tenant", "usage-facts", ...args]);
      assert.equal(r.code, 0, r.stderr);
      const facts = JSON.parse(r.stdout);
      assert.equal(facts.length, count);
      for (const f of facts) {
        assert.deepEqual(
          Object.keys(f),
          [
            "machine_id",
            "state",
            "region",
            "instance_id",
            "started_at",
            "stopped_at",
            "deleted_at",
            "metadata",
            "volumes",
          ],
        );
        assert.deepEqual(f, expectedFact(sim.state.machines.get(f.machine_id)!, sizes));
      }
      return facts;
    };
    const all = await checkFacts([], 4);
    const stopped = all.find((f: { machine_id: string }) => f.machine_id === acme1.id);
    assert.equal(stopped.state, "stopped");
    assert.ok(stopped.stopped_at > stopped.started_at);
    await checkFacts(["--tenant", "globex"], 2);

    // update-image: acme only; the stopped machine stays stopped, the other restarts.
    const image = "registry.fly.io/vault-tenants/init:v2";
    const dry = await admin(sim, [
      "tenant",
      "update-image",
      "--image",
      image,
      "--tenant",
      "acme",
      "--dry-run",
      "--json",
    ]);
    assert.equal(dry.code, 0, dry.stderr);
    assert.equal(JSON.parse(dry.stdout).not_attempted.length, 2);
    const before = new Map([...sim.state.machines.values()].map((m) => [m.id, m.instance_id]));
    const up = await admin(sim, [
      "tenant",
      "update-image",
      "--image",
      image,
      "--tenant",
      "acme",
      "--json",
    ]);
    assert.equal(up.code, 0, up.stderr);
    const summary = JSON.parse(up.stdout);
    assert.equal(summary.updated.length, 2);
    assert.equal(summary.failed, null);
    for (const m of tenantState(sim, "acme").machines) {
      assert.equal(m.config.image, image);
      assert.notEqual(m.instance_id, before.get(m.id));
      assert.equal(m.state, m.id === acme1.id ? "stopped" : "started");
    }
    for (const m of tenantState(sim, "globex").machines) assert.notEqual(m.config.image, image);
    const again2 = await admin(sim, [
      "tenant",
      "update-image",
      "--image",
      image,
      "--all-tenants",
      "--json",
    ]);
    const s2 = JSON.parse(again2.stdout);
    assert.equal(s2.unchanged.length, 2);
    assert.equal(s2.updated.length, 2);
    await checkFacts([], 4);

    // delete: refused without --yes, then complete; usage facts keep the destroyed machines.
    const refused = await admin(sim, ["tenant", "delete", "acme"]);
    assert.equal(refused.code, 2);
    assert.match(refused.stderr, /--yes/);
    assert.equal(tenantState(sim, "acme").machines.length, 2);
    const del = await admin(sim, ["tenant", "delete", "acme", "--yes"]);
    assert.equal(del.code, 0, del.stderr);
    assert.deepEqual(
      { m: tenantState(sim, "acme").machines.length, v: tenantState(sim, "acme").volumes.length },
      { m: 0, v: 0 },
    );
    assert.equal(tenantState(sim, "globex").machines.length, 2);
    const del2 = await admin(sim, ["tenant", "delete", "acme", "--yes"]);
    assert.equal(del2.code, 0, del2.stderr);
    const facts = await checkFacts(["--tenant", "acme"], 2);
    for (const f of facts) {
      assert.equal(f.state, "destroyed");
      assert.ok(f.deleted_at && f.stopped_at && f.deleted_at >= f.stopped_at);
    }
    const gone = await admin(sim, ["tenant", "delete", "globex", "--yes"]);
    assert.equal(gone.code, 0, gone.stderr);
    assert.equal([...sim.state.volumes.values()].filter((v) => v.state !== "destroyed").length, 0);
  } finally {
    await sim.close();
  }
});

Deno.test("missing token or app: an error naming it, exit 2", async () => {
  const sim = await startSim();
  try {
    const noToken = await admin(sim, ["tenant", "list"], { FLY_API_TOKEN: "" });
    assert.equal(noToken.code, 2);
    assert.match(noToken.stderr, /--api-token or FLY_API_TOKEN/);
    const noApp = await admin(sim, ["tenant", "list"], { FLY_APP: "" });
    assert.equal(noApp.code, 2);
    assert.match(noApp.stderr, /--app or FLY_APP/);
    const bad = await admin(sim, ["tenant", "list", "--api-token", "wrong"]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /GET \/v1\/apps\/vault-tenants\/machines: 401/);
    assert.match(bad.stderr, /token validation error/);
    assert.ok(!bad.stderr.includes("wrong"));
  } finally {
    await sim.close();
  }
});

Deno.test("usage-facts --listen: bearer in constant time, healthz, SIGTERM", async () => {
  const sim = await startSim();
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--quiet",
      join(ROOT, "bin", "fly-vault-admin.ts"),
      "tenant",
      "usage-facts",
      "--listen",
      "127.0.0.1:0",
      "--bearer-token",
      "metering-secret",
    ],
    env: { FLY_API_BASE: sim.baseUrl, FLY_API_TOKEN: TOKEN, FLY_APP: APP },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  try {
    const tpl = join(sim.dir, "t.toml");
    await Deno.writeTextFile(tpl, template(1));
    assert.equal(
      (await admin(sim, [
        "tenant",
        "create",
        "acme",
        "--template",
        tpl,
        "--access-token",
        tokenOf("a"),
      ]))
        .code,
      0,
    );
    // Wait on the event: the line saying where it listens.
    const reader = child.stdout.getReader();
    let first = "";
    const dec = new TextDecoder();
    while (!first.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) break;
      first += dec.decode(value, { stream: true });
    }
    const url = first.match(/listening on (http:\/\/\S+)/)?.[1];
    assert.ok(url, first);
    const get = async (path: string, auth?: string) => {
      const res = await fetch(url + path, auth ? { headers: { authorization: auth } } : {});
      return { status: res.status, body: await res.json() };
    };
    assert.equal((await get("/usage-facts")).status, 401);
    assert.equal((await get("/usage-facts", "Bearer wrong")).status, 401);
    assert.equal((await get("/usage-facts", "Bearer metering-secre")).status, 401);
    const ok = await get("/usage-facts", "Bearer metering-secret");
    assert.equal(ok.status, 200);
    assert.equal(ok.body.length, 1);
    assert.equal(ok.body[0].metadata.fly_vault_tenant, "acme");
    assert.equal((await get("/healthz")).status, 200);
    child.kill("SIGTERM");
    const status = await child.status;
    assert.equal(status.code, 0);
    await reader.cancel();
    await child.stderr.cancel();
  } finally {
    try {
      child.kill("SIGKILL");
    } catch { /* exited */ }
    await child.status;
    await sim.close();
  }
});

Deno.test("create --dry-run prints the rendered requests, redacted, and calls nothing", async () => {
  const sim = await startSim();
  try {
    const tpl = join(sim.dir, "t.toml");
    await Deno.writeTextFile(
      tpl,
      template(2).replace('region = "ord"', 'region = "{{region}}"'),
    );
    const r = await admin(sim, [
      "tenant",
      "create",
      "acme",
      "--template",
      tpl,
      "--access-token",
      "very-secret-0123456789abcdef0123456789",
      "--var",
      "region=fra",
      "--dry-run",
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(sim.requests.length, 0);
    assert.ok(!r.stdout.includes("very-secret"));
    const plan = JSON.parse(r.stdout);
    assert.deepEqual(
      plan.requests.map((x: { method: string; path: string }) => `${x.method} ${x.path}`),
      [
        "POST /v1/apps/vault-tenants/volumes",
        "POST /v1/apps/vault-tenants/machines",
        "POST /v1/apps/vault-tenants/volumes",
        "POST /v1/apps/vault-tenants/machines",
      ],
    );
    assert.equal(plan.requests[1].body.region, "fra");
    assert.equal(plan.requests[1].body.config.env.ACCESS_TOKEN, "<redacted>");
    assert.deepEqual(plan.requests[3].body.config.metadata, {
      fly_vault_tenant: "acme",
      fly_vault_index: "2",
    });
    const unknown = await admin(sim, ["tenant", "create", "acme", "--template", tpl, "--dry-run"]);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /line 7: unknown variable \{\{region\}\}/);
  } finally {
    await sim.close();
  }
});

Deno.test("create refuses a short access token, and prints each machine's client config", async () => {
  const sim = await startSim();
  try {
    const tpl = join(sim.dir, "t.toml");
    await Deno.writeTextFile(tpl, template(2));
    const weak = await admin(sim, [
      "tenant",
      "create",
      "acme",
      "--template",
      tpl,
      "--access-token",
      "hunter2",
    ]);
    assert.equal(weak.code, 2, "bad usage");
    assert.match(
      weak.stderr,
      /error\[admin\.weak_access_token\]: --access-token has 7 characters; at least 32 are required/,
    );
    assert.match(weak.stderr, /openssl rand -base64 32/);
    assert.ok(!weak.stderr.includes("hunter2"), "the token is not echoed");
    assert.equal(sim.requests.length, 0, "nothing was created");

    const token = tokenOf("acme");
    const r = await admin(sim, [
      "tenant",
      "create",
      "acme",
      "--template",
      tpl,
      "--access-token",
      token,
      "--org",
      "my-org",
      "--proxy",
      "vault.example.com:443",
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(!r.stdout.includes(token), "the token is never printed");
    const { machines } = tenantState(sim, "acme");
    for (const m of machines) {
      const i = m.config.metadata?.fly_vault_index;
      assert.ok(
        r.stdout.includes(
          [
            `[vault.acme-${i}]`,
            `address = "vault.example.com:443"`,
            `org = "my-org"`,
            `app = "${APP}"`,
            `machine_id = "${m.id}"`,
            `access_token = "<from your admin>"`,
          ].join("\n"),
        ),
        r.stdout,
      );
    }
    // Scripts get the same tables in --json, and without --proxy each machine's 6PN address.
    const json = await admin(sim, [
      "tenant",
      "create",
      "acme",
      "--template",
      tpl,
      "--access-token",
      token,
      "--json",
    ], { FLY_ORG: "my-org" });
    assert.equal(json.code, 0, json.stderr);
    const out = JSON.parse(json.stdout);
    assert.deepEqual(
      out.vaults.map((v: { name: string; machine_id: string }) => [v.name, v.machine_id]),
      out.machines.map((m: { index: number; id: string }) => [`acme-${m.index}`, m.id]),
    );
    for (const v of out.vaults) {
      const m = machines.find((x) => x.id === v.machine_id)!;
      assert.equal(v.address, `[${m.private_ip}]:8443`);
      assert.equal(v.org, "my-org");
    }
  } finally {
    await sim.close();
  }
});
