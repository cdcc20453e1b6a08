import assert from "node:assert/strict";
import {
  cachedResolver,
  machineIdFromSni,
  machinesApiResolver,
  type Resolution,
  splitHostPort,
  templateResolver,
} from "./resolver.ts";

Deno.test("SNI to machine id: only <id>.vault.internal with a plain id", () => {
  assert.equal(machineIdFromSni("3d8d9b1a2c4e58.vault.internal"), "3d8d9b1a2c4e58");
  assert.equal(machineIdFromSni("vault.internal"), null);
  assert.equal(machineIdFromSni("a.b.vault.internal"), null, "no dots: the id goes into DNS names");
  assert.equal(machineIdFromSni("x.vault.internal.evil"), null);
  assert.equal(machineIdFromSni("-x.vault.internal"), null);
  assert.deepEqual(splitHostPort("[fdaa::3]:8443"), { host: "fdaa::3", port: 8443 });
  assert.equal(splitHostPort("host"), null);
});

Deno.test("template resolver: AAAA first, then A, NXDOMAIN is unknown, failures are errors", async () => {
  const asked: string[] = [];
  const records: Record<string, string[]> = {
    "AAAA m1.vm.t.internal": ["fdaa::1"],
    "A m2.vm.t.internal": ["10.0.0.2"],
  };
  const dns = (name: string, type: "AAAA" | "A") => {
    asked.push(`${type} ${name}`);
    if (name.startsWith("broken")) return Promise.reject(new Error("SERVFAIL"));
    const r = records[`${type} ${name}`];
    if (!r) return Promise.reject(Object.assign(new Error("no records"), { name: "NotFound" }));
    return Promise.resolve(r);
  };
  const resolve = templateResolver("{machine_id}.vm.t.internal:8443", dns);
  assert.deepEqual(await resolve("m1"), { ok: true, backend: { hostname: "fdaa::1", port: 8443 } });
  assert.deepEqual(await resolve("m2"), {
    ok: true,
    backend: { hostname: "10.0.0.2", port: 8443 },
  });
  assert.deepEqual(asked.slice(0, 3), [
    "AAAA m1.vm.t.internal",
    "AAAA m2.vm.t.internal",
    "A m2.vm.t.internal",
  ]);
  const none = await resolve("m3");
  assert.ok(!none.ok && none.reason === "unknown");
  const broken = await resolve("broken");
  assert.ok(!broken.ok && broken.reason === "error");
  const noPort = await templateResolver("{machine_id}.vm.t.internal", dns)("m1");
  assert.ok(!noPort.ok && noPort.reason === "error", "a template that is not host:port");
  assert.throws(() => templateResolver("no-placeholder:1"));
});

Deno.test("Machines API resolver: app in the path, id checked, a stopped machine is said so", async () => {
  const machines: Record<string, unknown> = {
    "/v1/apps/tenants/machines/m1": { id: "m1", state: "started", private_ip: "fdaa::5" },
    "/v1/apps/tenants/machines/m2": { id: "m2", state: "stopped", private_ip: "fdaa::6" },
    "/v1/apps/tenants/machines/m3": { id: "other", state: "started", private_ip: "fdaa::7" },
    "/v1/apps/tenants/machines/m4": { id: "m4", state: "started" },
  };
  const fake = (input: string | URL | Request) => {
    const path = new URL(String(input)).pathname;
    const m = machines[path];
    if (path.endsWith("/m5")) return Promise.resolve(new Response("boom", { status: 500 }));
    return Promise.resolve(m ? Response.json(m) : new Response("{}", { status: 404 }));
  };
  const r = machinesApiResolver({
    url: "http://api/",
    app: "tenants",
    fetch: fake as typeof fetch,
  });
  assert.deepEqual(await r("m1"), { ok: true, backend: { hostname: "fdaa::5", port: 8443 } });
  const reasons = await Promise.all(["m2", "m3", "m4", "m5", "m9"].map(async (id) => {
    const x = await r(id);
    return x.ok ? "ok" : x.reason;
  }));
  assert.deepEqual(reasons, ["stopped", "unknown", "error", "error", "unknown"]);
});

Deno.test("Machines API resolver with wake: starts a suspended machine, reads its new address; a failed start says why", async () => {
  const state: Record<string, { state: string; ip: string; fails?: boolean }> = {
    s1: { state: "suspended", ip: "fdaa::1" },
    s2: { state: "stopped", ip: "fdaa::2", fails: true },
    s3: { state: "destroyed", ip: "fdaa::3" },
  };
  const calls: string[] = [];
  const fake = (input: string | URL | Request, init?: RequestInit) => {
    const url = new URL(String(input));
    const [, , , , , id, action] = url.pathname.split("/");
    const m = state[id];
    calls.push(`${init?.method ?? "GET"} ${id}${action ? "/" + action : ""}`);
    assert.equal(new Headers(init?.headers).get("authorization"), "Bearer tok");
    if (!m) return Promise.resolve(new Response("{}", { status: 404 }));
    if (action === "start") {
      if (m.fails) m.state = "failed";
      else {
        m.state = "started";
        m.ip = m.ip.replace("::", "::9"); // a stopped machine may come back elsewhere
      }
      return Promise.resolve(Response.json({ previous_state: "suspended" }));
    }
    if (action === "wait") return Promise.resolve(Response.json({ ok: true }));
    return Promise.resolve(Response.json({
      id,
      state: m.state,
      private_ip: m.ip,
      events: m.state === "failed"
        ? [{ type: "start", status: "failed", timestamp: 2, request: { error: "no \x1b[31mroom" } }]
        : [],
    }));
  };
  const r = machinesApiResolver({
    url: "http://api",
    app: "tenants",
    token: "tok",
    wake: true,
    fetch: fake as typeof fetch,
  });
  const woke = await r("s1");
  assert.ok(woke.ok);
  assert.deepEqual(woke.backend, { hostname: "fdaa::91", port: 8443 });
  assert.equal(woke.woke?.from, "suspended");
  assert.deepEqual(calls, ["GET s1", "POST s1/start", "GET s1/wait", "GET s1"]);
  const failed = await r("s2");
  assert.equal(failed.ok, false);
  assert.equal(!failed.ok && failed.reason, "wake_failed");
  assert.match(!failed.ok ? failed.detail : "", /did not start \(failed: no \?\[31mroom\)/);
  const gone = await r("s3");
  assert.equal(!gone.ok && gone.reason, "unknown", "a destroyed machine is not woken");
  assert.ok(!calls.includes("POST s3/start"));
});

Deno.test("cache: hits for the TTL, unknown for the negative TTL, errors never; one lookup at a time", async () => {
  let t = 0;
  let calls = 0;
  const answers: Record<string, Resolution> = {
    a: { ok: true, backend: { hostname: "::1", port: 1 } },
    u: { ok: false, reason: "unknown", detail: "" },
    e: { ok: false, reason: "error", detail: "" },
  };
  const r = cachedResolver((id) => {
    calls++;
    return new Promise((res) => queueMicrotask(() => res(answers[id])));
  }, { ttlMs: 1000, negativeTtlMs: 100, now: () => t });
  await Promise.all([r("a"), r("a"), r("a")]);
  assert.equal(calls, 1, "concurrent lookups share one");
  await r("a");
  assert.equal(calls, 1);
  t = 1001;
  await r("a");
  assert.equal(calls, 2);
  await r("u");
  await r("u");
  assert.equal(calls, 3);
  t += 101;
  await r("u");
  assert.equal(calls, 4);
  await r("e");
  await r("e");
  assert.equal(calls, 6);
});

Deno.test("cachedResolver: a wake is reported once; cached hits are plain routes", async () => {
  const backend = { hostname: "::1", port: 1 };
  const r = cachedResolver(() =>
    Promise.resolve({ ok: true, backend, woke: { from: "suspended", ms: 5 } } as Resolution)
  );
  assert.deepEqual(await r("w"), { ok: true, backend, woke: { from: "suspended", ms: 5 } });
  assert.deepEqual(await r("w"), { ok: true, backend }, "a cache hit woke nothing");
});
