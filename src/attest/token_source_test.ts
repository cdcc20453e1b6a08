import assert from "node:assert/strict";
import { join } from "node:path";
import { decodeJwt } from "jose";
import { isVaultError, type VaultError } from "../errors/mod.ts";
import { type OidcIssuer, startOidcIssuer } from "../flysim/oidc.ts";
import { serveTokenSocket } from "../flysim/token_socket.ts";
import { createFlyTokenSource, verifyAttestationToken } from "./mod.ts";

const machine = {
  org: "acme",
  app: "vault-tenants",
  machine_id: "148e21ea7e46e8",
  machine_name: "tenant-one",
  region: "ord",
  image: "registry.fly.io/vault:1",
};
const AUD = "fly-vault:v1:47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU";

async function refusal(p: Promise<unknown>): Promise<VaultError> {
  try {
    await p;
  } catch (err) {
    assert.ok(isVaultError(err), `expected a VaultError, got ${err}`);
    return err;
  }
  assert.fail("expected a failure");
}

async function withSocket(
  fn: (ctx: { path: string; issuer: OidcIssuer; requests: () => number }) => Promise<void>,
  mint?: (aud: string) => Promise<string>,
) {
  const dir = await Deno.makeTempDir({ prefix: "fv-attest-" });
  const issuer = await startOidcIssuer();
  const path = join(dir, "api.sock");
  const socket = await serveTokenSocket({ path, machine, issuer, mint });
  try {
    await fn({ path, issuer, requests: () => socket.requests });
  } finally {
    await socket.close();
    await issuer.close();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("the token source gets a genuine token over the unix socket", () =>
  withSocket(async ({ path, issuer }) => {
    const source = createFlyTokenSource({ socketPath: path });
    try {
      const token = await source.get(AUD);
      const claims = await verifyAttestationToken(token, {
        issuerBase: issuer.baseUrl,
        org: machine.org,
        app: machine.app,
        machineId: machine.machine_id,
        audience: AUD,
        allowInsecureIssuer: true,
      });
      assert.equal(claims.machine_name, "tenant-one");
      assert.equal(claims.exp - claims.iat, 600);
    } finally {
      source.close();
    }
  }));

Deno.test("a token is reused until shortly before exp, then replaced", () =>
  withSocket(async ({ path, requests }) => {
    let clock = Date.now();
    const source = createFlyTokenSource({
      socketPath: path,
      refreshBeforeSeconds: 60,
      now: () => clock,
    });
    try {
      const first = await source.get(AUD);
      const { exp } = decodeJwt(first);
      assert.equal(await source.get(AUD), first);
      clock = (exp! - 61) * 1000;
      assert.equal(await source.get(AUD), first, "still 61 s left: reused");
      assert.equal(requests(), 1);
      clock = (exp! - 59) * 1000;
      const second = await source.get(AUD);
      assert.notEqual(second, first, "59 s left: replaced");
      assert.equal(requests(), 2);
      // flysim mints with the wall clock, so the new token is judged against it.
      clock = Date.now();
      assert.equal(await source.get(AUD), second);
      // Another audience is its own token.
      const other = await source.get(`${AUD}x`);
      assert.equal(decodeJwt(other).aud, `${AUD}x`);
      assert.equal(requests(), 3);
    } finally {
      source.close();
    }
  }));

Deno.test("concurrent requests for one audience share one socket request", () =>
  withSocket(async ({ path, requests }) => {
    const source = createFlyTokenSource({ socketPath: path });
    try {
      const tokens = await Promise.all(Array.from({ length: 8 }, () => source.get(AUD)));
      assert.equal(new Set(tokens).size, 1);
      assert.equal(requests(), 1);
    } finally {
      source.close();
    }
  }));

Deno.test("a missing, non-socket or dead socket is attest.token_socket with a hint", async () => {
  const dir = await Deno.makeTempDir({ prefix: "fv-attest-" });
  try {
    const missing = createFlyTokenSource({ socketPath: join(dir, "nope.sock") });
    const e1 = await refusal(missing.get(AUD));
    assert.equal(e1.code, "attest.token_socket");
    assert.match(e1.message, /no token socket at .*nope\.sock/);
    assert.match(e1.hint, /Fly Machine.*FLY_VAULT_TOKEN_SOCKET/);
    missing.close();

    await Deno.writeTextFile(join(dir, "file"), "x");
    const file = createFlyTokenSource({ socketPath: join(dir, "file") });
    assert.equal((await refusal(file.get(AUD))).code, "attest.token_socket");
    file.close();

    // A socket file nobody listens on any more: its listener was SIGKILLed.
    const deadPath = join(dir, "dead.sock");
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "eval",
        `const l = Deno.listen({ transport: "unix", path: ${
          JSON.stringify(deadPath)
        } }); console.log("ready"); await l.accept();`,
      ],
      stdout: "piped",
    }).spawn();
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    assert.match((await reader.read()).value ?? "", /ready/);
    child.kill("SIGKILL");
    await child.status;
    await reader.cancel();
    assert.ok((await Deno.lstat(deadPath)).isSocket);
    const dead = createFlyTokenSource({ socketPath: deadPath });
    const e3 = await refusal(dead.get(AUD));
    assert.equal(e3.code, "attest.token_socket");
    assert.match(e3.message, /refused/);
    dead.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a reply that is not a JWT is attest.token_reply", async () => {
  let reply: string | Error = "";
  const cases: Array<[string | Error, RegExp]> = [
    ["", /empty/],
    ["not a jwt", /not a JWT/],
    ["a.b", /not a JWT/],
    ["eyJhbGciOiJSUzI1NiJ9.bm90IGpzb24.c2ln", /not a decodable JWT/],
    ["eyJhbGciOiJSUzI1NiJ9.e30.c2ln", /no numeric exp/],
    ["a".repeat(20_000), /larger than/],
    [new Error("issuer down"), /answered 500/],
  ];
  await withSocket(async ({ path }) => {
    const source = createFlyTokenSource({ socketPath: path });
    try {
      for (const [r, why] of cases) {
        reply = r;
        const err = await refusal(source.get(AUD));
        assert.equal(err.code, "attest.token_reply", String(r).slice(0, 20));
        assert.match(err.message, why);
      }
    } finally {
      source.close();
    }
  }, () => reply instanceof Error ? Promise.reject(reply) : Promise.resolve(reply));
});
