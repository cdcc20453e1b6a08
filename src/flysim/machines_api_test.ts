import assert from "node:assert/strict";
import {
  fakeLauncher,
  type SimLauncher,
  type SimMachineLaunch,
  startMachinesApi,
} from "./machines_api.ts";

// deno-lint-ignore no-explicit-any
type Json = any;
const TOKEN = "sim-token";
const APP = "vault-tenants";

async function withSim(
  fn: (
    api: (method: string, path: string, body?: unknown, token?: string) => Promise<{
      status: number;
      body: Json;
      headers: Headers;
    }>,
    sim: ReturnType<typeof startMachinesApi>,
    launched: SimMachineLaunch[],
  ) => Promise<void>,
  launcher?: SimLauncher,
) {
  const dir = await Deno.makeTempDir();
  const launched: SimMachineLaunch[] = [];
  const sim = startMachinesApi({
    token: TOKEN,
    launcher: launcher ?? fakeLauncher({ onStart: (m) => launched.push(m) }),
    dataDir: dir,
  });
  const api = async (method: string, path: string, body?: unknown, token = TOKEN) => {
    const res = await fetch(`${sim.baseUrl}/v1/apps/${APP}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : null, headers: res.headers };
  };
  try {
    await fn(api, sim, launched);
  } finally {
    await sim.close();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("bearer auth: 401 in Fly's ErrorResponse shape", () =>
  withSim(async (api) => {
    for (const token of ["", "wrong", `${TOKEN}x`]) {
      const r = await api("GET", "/machines", undefined, token);
      assert.equal(r.status, 401);
      assert.deepEqual(r.body, { error: "Authenticate: token validation error" });
    }
    assert.equal((await api("GET", "/machines")).status, 200);
  }));

Deno.test("a machine's life: volume attach, states, events, update, destroy", () =>
  withSim(async (api, sim, launched) => {
    const vol = (await api("POST", "/volumes", { name: "tvol_a_1", region: "ord", size_gb: 2 }))
      .body;
    assert.equal(vol.state, "created");
    assert.equal(vol.attached_machine_id, null);
    const created = await api("POST", "/machines", {
      name: "tenant-a-1",
      region: "ord",
      config: {
        image: "img:1",
        env: { ACCESS_TOKEN: "t" },
        metadata: { fly_vault_tenant: "a" },
        mounts: [{ volume: vol.id, path: "/data" }],
      },
    });
    assert.equal(created.status, 200);
    const id = created.body.id;
    assert.match(id, /^[0-9a-f]{14}$/);
    assert.equal(created.body.state, "created");
    const wait = await api("GET", `/machines/${id}/wait?state=started&timeout=10`);
    assert.deepEqual([wait.status, wait.body.ok, wait.body.state], [200, true, "started"]);
    assert.equal(launched[0].volumeDir, sim.state.volumes.get(vol.id)!.dir);
    assert.equal(launched[0].env.ACCESS_TOKEN, "t");
    assert.equal((await api("GET", `/volumes/${vol.id}`)).body.attached_machine_id, id);

    const dup = await api("POST", "/machines", { name: "tenant-a-1", config: { image: "x" } });
    assert.equal(dup.status, 422);
    const busy = await api("POST", "/machines", {
      name: "other",
      region: "ord",
      config: { image: "x", mounts: [{ volume: vol.id, path: "/data" }] },
    });
    assert.equal(busy.status, 400);
    assert.match(busy.body.error, /already attached/);
    assert.equal((await api("DELETE", `/volumes/${vol.id}`)).status, 412);

    assert.equal((await api("POST", `/machines/${id}/stop`, { signal: "SIGTERM" })).status, 200);
    assert.equal((await api("GET", `/machines/${id}`)).body.state, "stopped");
    await api("POST", `/machines/${id}/start`);
    await api("GET", `/machines/${id}/wait?state=started&timeout=10`);
    const before = (await api("GET", `/machines/${id}`)).body;
    const updated = await api("POST", `/machines/${id}`, {
      config: { ...before.config, image: "img:2" },
    });
    assert.notEqual(updated.body.instance_id, before.instance_id);
    assert.equal(updated.body.config.image, "img:2");
    const w2 = await api(
      "GET",
      `/machines/${id}/wait?state=started&timeout=10&instance_id=${updated.body.instance_id}`,
    );
    assert.equal(w2.status, 200);
    assert.equal(launched.at(-1)!.image, "img:2");

    assert.equal((await api("DELETE", `/machines/${id}`)).status, 412);
    assert.equal((await api("DELETE", `/machines/${id}?force=true`)).status, 200);
    assert.equal((await api("GET", `/volumes/${vol.id}`)).body.attached_machine_id, null);
    assert.equal((await api("GET", "/machines")).body.length, 0);
    const all = (await api("GET", "/machines?include_deleted=true")).body;
    assert.equal(all[0].state, "destroyed");
    const events = (await api("GET", `/machines/${id}/events?limit=50`)).body;
    const seq = events.reverse().map((e: { type: string; status: string }) =>
      `${e.type}:${e.status}`
    );
    assert.deepEqual(seq, [
      "launch:created",
      "start:starting",
      "start:started",
      "stop:stopping",
      "exit:stopped",
      "start:starting",
      "start:started",
      "stop:stopping",
      "exit:stopped",
      "update:stopped",
      "start:starting",
      "start:started",
      "stop:stopping",
      "exit:stopped",
      "destroy:destroying",
      "destroy:destroyed",
    ]);
    for (const e of events) assert.ok(Number.isInteger(e.timestamp) && e.timestamp > 1.7e12);
    assert.equal((await api("GET", `/machines/${id}/events?limit=2`)).body[0].status, "destroyed");
    assert.equal((await api("DELETE", `/volumes/${vol.id}`)).status, 200);
    assert.equal((await api("GET", `/volumes/${vol.id}`)).status, 404);
    assert.equal((await api("GET", "/volumes")).body.length, 0);
  }));

Deno.test("list filters: metadata, state; wait times out with 408", () =>
  withSim(async (api) => {
    for (const t of ["a", "b", "a"]) {
      await api("POST", "/machines", {
        region: "ord",
        skip_launch: true,
        config: { image: "x", metadata: { fly_vault_tenant: t } },
      });
    }
    assert.equal((await api("GET", "/machines?metadata.fly_vault_tenant=a")).body.length, 2);
    assert.equal((await api("GET", "/machines?metadata.fly_vault_tenant=c")).body.length, 0);
    assert.equal((await api("GET", "/machines?state=started")).body.length, 0);
    const [m] = (await api("GET", "/machines?summary=true")).body;
    assert.equal(m.config, undefined);
    const w = await api("GET", `/machines/${m.id}/wait?state=started&timeout=1`);
    assert.equal(w.status, 408);
    assert.equal(typeof w.body.error, "string");
  }));

Deno.test("a machine whose process exits on its own is stopped, with an exit event", () => {
  const exits: Array<(code: number) => void> = [];
  const launcher: SimLauncher = {
    start() {
      const { promise, resolve } = Promise.withResolvers<number | null>();
      exits.push(resolve);
      return Promise.resolve({ exited: promise, stop: () => (resolve(null), Promise.resolve()) });
    },
  };
  return withSim(async (api) => {
    const { id } = (await api("POST", "/machines", { config: { image: "x" } })).body;
    await api("GET", `/machines/${id}/wait?state=started&timeout=10`);
    exits[0](3);
    const w = await api("GET", `/machines/${id}/wait?state=stopped&timeout=10`);
    assert.equal(w.status, 200);
    const [last] = (await api("GET", `/machines/${id}/events`)).body;
    assert.equal(last.type, "exit");
    assert.equal(last.request.exit_event.exit_code, 3);
  }, launcher);
});

Deno.test("faults: 429 with Retry-After, 500, nth, slow, act-then-fail", () =>
  withSim(async (api, sim) => {
    sim.faults.push({
      match: { method: "GET", pathRegex: "/volumes$" },
      nth: 2,
      kind: "429",
      retryAfter: 7,
    });
    assert.equal((await api("GET", "/volumes")).status, 200);
    const limited = await api("GET", "/volumes");
    assert.equal(limited.status, 429);
    assert.equal(limited.headers.get("retry-after"), "7");
    assert.equal((await api("GET", "/volumes")).status, 200);

    sim.faults.push({ match: { method: "POST" }, kind: "500-after" });
    const r = await api("POST", "/volumes", { name: "v1", region: "ord" });
    assert.equal(r.status, 500);
    assert.equal(sim.state.volumes.size, 1, "the volume was created before the 500");
    sim.faults.push({ match: { method: "POST" }, kind: "500" });
    assert.equal((await api("POST", "/volumes", { name: "v2", region: "ord" })).status, 500);
    assert.equal(sim.state.volumes.size, 1, "a plain 500 does nothing");

    sim.faults.push({ match: {}, kind: "slow", delayMs: 200 });
    const t0 = performance.now();
    assert.equal((await api("GET", "/machines")).status, 200);
    assert.ok(performance.now() - t0 >= 190);
  }));

/** fakeLauncher, remembering each machine's process and counting freezes and thaws. */
function countingLauncher() {
  const procs: Array<{ freezes: number; thaws: number; stops: number }> = [];
  const launched: SimMachineLaunch[] = [];
  const inner = fakeLauncher({ onStart: (m) => launched.push(m) });
  const launcher: SimLauncher = {
    async start(m) {
      const p = await inner.start(m);
      const n = { freezes: 0, thaws: 0, stops: 0 };
      procs.push(n);
      return {
        ...p,
        freeze: () => (n.freezes++, p.freeze!()),
        thaw: () => (n.thaws++, p.thaw!()),
        stop: (s) => (n.stops++, p.stop(s)),
      };
    },
  };
  return { launcher, procs, launched };
}

const statuses = (events: Json[]) =>
  events.slice().reverse().map((e: Json) => `${e.type}/${e.status}/${e.source}`);

Deno.test("suspend and resume as Fly's: states, events, wait; resume thaws the same process", () => {
  const c = countingLauncher();
  return withSim(async (api) => {
    const id = (await api("POST", "/machines", { name: "s1", config: { image: "img:1" } })).body.id;
    assert.equal((await api("GET", `/machines/${id}/wait?state=started&timeout=10`)).status, 200);
    // Only a started machine suspends.
    const before = Date.now();
    const s = await api("POST", `/machines/${id}/suspend`);
    assert.equal(s.status, 200);
    const waited = await api("GET", `/machines/${id}/wait?state=suspended&timeout=5`);
    assert.deepEqual([waited.status, waited.body.state], [200, "suspended"]);
    assert.equal((await api("GET", `/machines/${id}`)).body.state, "suspended");
    assert.equal(c.procs[0].freezes, 1);
    // Listing by state sees it; settled includes suspended.
    assert.equal((await api("GET", `/machines?state=suspended`)).body.length, 1);
    assert.equal((await api("GET", `/machines/${id}/wait?state=settled&timeout=1`)).status, 200);
    // Suspending again is a no-op; a second start of the same process is a resume, not a boot.
    assert.equal((await api("POST", `/machines/${id}/suspend`)).status, 200);
    assert.equal(c.procs[0].freezes, 1);
    const started = await api("POST", `/machines/${id}/start`);
    assert.deepEqual(started.body, { previous_state: "suspended" });
    assert.equal((await api("GET", `/machines/${id}/wait?state=started&timeout=5`)).status, 200);
    assert.equal(c.procs.length, 1, "resumed, not booted again");
    assert.equal(c.procs[0].thaws, 1);
    const events = (await api("GET", `/machines/${id}/events`)).body;
    assert.deepEqual(statuses(events), [
      "launch/created/user",
      "start/starting/user",
      "start/started/flyd",
      "suspend/suspending/user",
      "suspend/suspended/flyd",
      "start/starting/user",
      "start/started/flyd",
    ]);
    assert.ok(events.every((e: Json) => e.timestamp >= before - 5000));
    // Stopping a suspended machine drops the snapshot: the next start boots afresh.
    await api("POST", `/machines/${id}/suspend`);
    assert.equal((await api("POST", `/machines/${id}/stop`)).status, 200);
    assert.equal((await api("GET", `/machines/${id}`)).body.state, "stopped");
    assert.equal(c.procs[0].stops, 1);
    assert.deepEqual((await api("POST", `/machines/${id}/start`)).body, {
      previous_state: "stopped",
    });
    assert.equal((await api("GET", `/machines/${id}/wait?state=started&timeout=5`)).status, 200);
    assert.equal(c.procs.length, 2);
  }, c.launcher);
});

Deno.test("suspend refuses a machine that is not started; the machine's own request suspends it", () => {
  const c = countingLauncher();
  return withSim(async (api) => {
    const id = (await api("POST", "/machines", {
      name: "s2",
      config: { image: "img:1" },
      skip_launch: true,
    })).body.id;
    const r = await api("POST", `/machines/${id}/suspend`);
    assert.equal(r.status, 412);
    assert.match(r.body.error, /machine is created/);
    await api("POST", `/machines/${id}/start`);
    assert.equal((await api("GET", `/machines/${id}/wait?state=started&timeout=10`)).status, 200);
    // What the token socket calls for the machine itself (no API token involved).
    assert.deepEqual(await c.launched[0].suspend!(), { status: 200, body: { ok: true } });
    assert.equal((await api("GET", `/machines/${id}`)).body.state, "suspended");
  }, c.launcher);
});

Deno.test("fail-start: a suspended or stopped machine that cannot start ends failed, with the reason", () => {
  const c = countingLauncher();
  return withSim(async (api, sim) => {
    const id = (await api("POST", "/machines", { name: "s3", config: { image: "img:1" } })).body.id;
    assert.equal((await api("GET", `/machines/${id}/wait?state=started&timeout=10`)).status, 200);
    await api("POST", `/machines/${id}/suspend`);
    sim.faults.push({ match: { method: "POST", pathRegex: "/start$" }, kind: "fail-start" });
    assert.equal((await api("POST", `/machines/${id}/start`)).status, 200);
    const w = await api("GET", `/machines/${id}/wait?state=started,failed&timeout=5`);
    assert.deepEqual([w.status, w.body.state], [200, "failed"]);
    assert.equal(c.procs[0].stops, 1, "the snapshot's process is gone");
    const last = (await api("GET", `/machines/${id}/events?limit=1`)).body[0];
    assert.deepEqual([last.type, last.status], ["start", "failed"]);
    assert.match(last.request.error, /failed to resume/);
    // The fault fired once: the next start boots it.
    await api("POST", `/machines/${id}/start`);
    assert.equal((await api("GET", `/machines/${id}/wait?state=started&timeout=5`)).status, 200);
    assert.equal(c.procs.length, 2);
  }, c.launcher);
});
