import assert from "node:assert/strict";
import { join } from "node:path";
import { decodeJwt } from "jose";
import { startOidcIssuer } from "./oidc.ts";
import { serveTokenSocket } from "./token_socket.ts";

const machine = {
  org: "acme",
  app: "web",
  machine_id: "148e21ea7e46e8",
  machine_name: "tenant-one",
  region: "ord",
  image: "registry.fly.io/web:1",
};

Deno.test("the token socket answers POST /v1/tokens/oidc and refuses everything else", async () => {
  const dir = await Deno.makeTempDir({ prefix: "fv-sock-" });
  const issuer = await startOidcIssuer();
  const path = join(dir, "api.sock");
  const socket = await serveTokenSocket({ path, machine, issuer });
  const client = Deno.createHttpClient({ proxy: { transport: "unix", path } });
  const call = async (method: string, url: string, body?: string) => {
    const res = await fetch(`http://localhost${url}`, { method, body, client });
    return { status: res.status, type: res.headers.get("content-type"), text: await res.text() };
  };
  try {
    assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);

    const ok = await call("POST", "/v1/tokens/oidc", JSON.stringify({ aud: "fly-vault:v1:x" }));
    assert.equal(ok.status, 200);
    assert.match(ok.type ?? "", /^text\/plain/);
    const claims = decodeJwt(ok.text);
    assert.equal(claims.aud, "fly-vault:v1:x");
    assert.equal(claims.machine_id, machine.machine_id);
    assert.equal(claims.sub, "acme:web:tenant-one");
    assert.equal(claims.iss, issuer.issuerFor("acme"));

    // Fly's aud is optional; flysim defaults it as Fly's docs example suggests.
    const noAud = await call("POST", "/v1/tokens/oidc", "{}");
    assert.equal(noAud.status, 200);
    assert.equal(decodeJwt(noAud.text).aud, "https://fly.io/acme");
    assert.equal(socket.requests, 2);

    for (
      const bad of [
        "not json",
        "[1]",
        '"aud"',
        '{"aud": 5}',
        '{"aud": ""}',
        '{"aws_principal_tags": "yes"}',
        JSON.stringify({ aud: "x".repeat(70_000) }),
      ]
    ) {
      const r = await call("POST", "/v1/tokens/oidc", bad);
      assert.equal(r.status, 400, bad.slice(0, 30));
      assert.match(r.type ?? "", /^text\/plain/);
    }
    assert.equal((await call("GET", "/v1/tokens/oidc")).status, 405);
    assert.equal((await call("POST", "/v1/apps/web/machines")).status, 404);
    assert.equal(socket.requests, 2, "refusals mint nothing");
  } finally {
    client.close();
    await socket.close();
    await issuer.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the mint override replaces genuine tokens", async () => {
  const dir = await Deno.makeTempDir({ prefix: "fv-sock-" });
  const issuer = await startOidcIssuer();
  const path = join(dir, "api.sock");
  const first = await serveTokenSocket({ path, machine, issuer });
  await first.close();
  const socket = await serveTokenSocket({
    path,
    machine,
    issuer,
    mint: (aud) => Promise.resolve(`forged-for-${aud}`),
  });
  const client = Deno.createHttpClient({ proxy: { transport: "unix", path } });
  try {
    const res = await fetch("http://localhost/v1/tokens/oidc", {
      method: "POST",
      body: '{"aud":"a"}',
      client,
    });
    assert.equal(await res.text(), "forged-for-a");
  } finally {
    client.close();
    await socket.close();
    await issuer.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the token socket suspends its own machine with no token and refuses any other", async () => {
  const dir = await Deno.makeTempDir({ prefix: "fv-sock-" });
  const issuer = await startOidcIssuer();
  const path = join(dir, "api.sock");
  let suspends = 0;
  const socket = await serveTokenSocket({
    path,
    machine,
    issuer,
    suspend: () => {
      suspends++;
      return Promise.resolve({ status: 200, body: { ok: true } });
    },
  });
  const unmanaged = await serveTokenSocket({ path: join(dir, "plain.sock"), machine, issuer });
  const client = Deno.createHttpClient({ proxy: { transport: "unix", path } });
  const plainClient = Deno.createHttpClient({
    proxy: { transport: "unix", path: join(dir, "plain.sock") },
  });
  const post = async (url: string, c = client) => {
    const res = await fetch(`http://flaps${url}`, { method: "POST", client: c });
    return { status: res.status, body: await res.json() };
  };
  try {
    const own = await post(`/v1/apps/web/machines/${machine.machine_id}/suspend`);
    assert.deepEqual(own, { status: 200, body: { ok: true } });
    assert.equal(suspends, 1);
    // Another machine of the same app, or the same id in another app: refused, nothing done.
    for (
      const url of [
        "/v1/apps/web/machines/0123456789abcd/suspend",
        "/v1/apps/other/machines/148e21ea7e46e8/suspend",
      ]
    ) {
      const r = await post(url);
      assert.equal(r.status, 403, url);
      assert.match(r.body.error, /only suspend the machine itself/);
    }
    assert.equal(suspends, 1);
    const get = await fetch(`http://flaps/v1/apps/web/machines/${machine.machine_id}/suspend`, {
      client,
    });
    assert.equal(get.status, 405);
    await get.body?.cancel();
    // A machine no Machines API runs (the bare launcher) says it cannot suspend.
    const plain = await post(`/v1/apps/web/machines/${machine.machine_id}/suspend`, plainClient);
    assert.equal(plain.status, 503);
  } finally {
    client.close();
    plainClient.close();
    await socket.close();
    await unmanaged.close();
    await issuer.close();
    await Deno.remove(dir, { recursive: true });
  }
});
