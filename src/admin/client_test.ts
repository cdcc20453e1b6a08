import assert from "node:assert/strict";
import { createFlyClient, FlyApiError, parseRetryAfter } from "./client.ts";

type Step = (req: Request) => Response;
const TOKEN = "secret-api-token-xyz";

/** A scripted API: each request takes the next step (the last one repeats). */
function scripted(steps: Step[]) {
  const seen: Array<{ method: string; url: string; auth: string | null; at: number }> = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    seen.push({
      method: req.method,
      url: req.url,
      auth: req.headers.get("authorization"),
      at: performance.now(),
    });
    return steps[Math.min(seen.length - 1, steps.length - 1)](req);
  });
  const client = (extra = {}) =>
    createFlyClient({
      apiBase: `http://127.0.0.1:${server.addr.port}`,
      token: TOKEN,
      app: "vault-tenants",
      baseBackoffMs: 5,
      maxBackoffMs: 20,
      ...extra,
    });
  return { seen, client, close: () => server.shutdown() };
}

const json = (body: unknown, status = 200, headers: Record<string, string> = {}) =>
  new Response(JSON.stringify(body), { status, headers });
const machine = { id: "m1", state: "started", config: { image: "x" } };
// Promises more body than it sends: the connection closes mid-reply.
const drop: Step = () =>
  new Response(
    new ReadableStream({
      start(c) {
        c.enqueue(new TextEncoder().encode("["));
        c.close();
      },
    }),
    { headers: { "content-length": "4096" } },
  );

Deno.test("429 honours Retry-After; 5xx and dropped connections are retried", async () => {
  const api = scripted([
    () => json({ error: "rate limited" }, 429, { "retry-after": "1" }),
    () => json({ error: "boom" }, 503),
    drop,
    () => json([machine]),
  ]);
  try {
    const delays: number[] = [];
    const list = await api.client({ onRetry: (r: { delayMs: number }) => delays.push(r.delayMs) })
      .listMachines({ metadata: { fly_vault_tenant: "acme" }, includeDeleted: true });
    assert.equal(list[0].id, "m1");
    assert.equal(api.seen.length, 4);
    assert.ok(api.seen[1].at - api.seen[0].at >= 950, "waited for Retry-After");
    assert.ok(delays[0] >= 1000 && delays[1] < 100, String(delays));
    const url = new URL(api.seen[0].url);
    assert.equal(url.pathname, "/v1/apps/vault-tenants/machines");
    assert.equal(url.searchParams.get("metadata.fly_vault_tenant"), "acme");
    assert.equal(url.searchParams.get("include_deleted"), "true");
    assert.equal(api.seen[0].auth, `Bearer ${TOKEN}`);
  } finally {
    await api.close();
  }
});

Deno.test("the deadline bounds retries; the error quotes Fly and the request, not the token", async () => {
  const api = scripted([() => json({ error: "database on fire" }, 500)]);
  try {
    const started = performance.now();
    await assert.rejects(api.client({ deadlineMs: 300 }).getMachine("m1"), (err) => {
      assert.ok(err instanceof FlyApiError);
      assert.equal(err.code, "fly.server_error");
      assert.match(
        err.message,
        /^GET \/v1\/apps\/vault-tenants\/machines\/m1: 500: "database on fire"/,
      );
      assert.match(err.message, /gave up after \d+ attempts/);
      assert.ok(!err.message.includes(TOKEN) && !err.hint.includes(TOKEN));
      return true;
    });
    assert.ok(performance.now() - started < 1000);
    assert.ok(api.seen.length > 2);
  } finally {
    await api.close();
  }
});

Deno.test("creates retry only what Fly refused; ambiguous failures are left to the caller", async () => {
  const refused = scripted([() => json({ error: "slow down" }, 429), () => json(machine)]);
  const failed = scripted([() => json({ error: "oops" }, 500)]);
  const dropped = scripted([drop]);
  try {
    const req = { name: "n", region: "ord", config: { image: "x" } };
    assert.equal((await refused.client().createMachine(req)).id, "m1");
    assert.equal(refused.seen.length, 2);
    for (const api of [failed, dropped]) {
      await assert.rejects(api.client().createMachine(req), (err) => {
        assert.ok(err instanceof FlyApiError);
        assert.equal(err.code, "fly.ambiguous");
        assert.match(err.message, /^POST \/v1\/apps\/vault-tenants\/machines/);
        return true;
      });
      assert.equal(api.seen.length, 1);
    }
  } finally {
    await Promise.all([refused.close(), failed.close(), dropped.close()]);
  }
});

Deno.test("4xx is not retried; a reply of the wrong shape is an error", async () => {
  const api = scripted([
    () => json({ error: "Name has already been taken" }, 422),
    () => json({ id: 5 }),
  ]);
  try {
    const c = api.client();
    await assert.rejects(c.getMachine("m"), (err) => {
      assert.ok(err instanceof FlyApiError);
      assert.equal(err.status, 422);
      assert.match(err.message, /Name has already been taken/);
      return true;
    });
    assert.equal(api.seen.length, 1);
    await assert.rejects(c.getVolume("v"), /unexpected reply shape at id/);
  } finally {
    await api.close();
  }
});

Deno.test("Retry-After: seconds or an HTTP date", () => {
  assert.equal(parseRetryAfter("2"), 2000);
  assert.equal(parseRetryAfter(null), undefined);
  assert.equal(parseRetryAfter("soon"), undefined);
  const now = Date.parse("2026-01-01T00:00:00Z");
  assert.equal(parseRetryAfter("Thu, 01 Jan 2026 00:00:03 GMT", now), 3000);
});
