/**
 * The vault-proxy program itself: started as a process with the Machines API
 * resolver (a stand-in API on loopback), relaying to a QUIC echo server at the
 * machine's private address, refusing a machine of another app, serving
 * /healthz and /metrics, and stopping cleanly on SIGTERM.
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { dial, echo, startEchoServer } from "./proxy_fixture.ts";

const BIN = fileURLToPath(new URL("../bin/vault-proxy.ts", import.meta.url));

/** Reads JSON log lines from the child's stdout; `next(pred)` waits for one. */
function lines(stream: ReadableStream<Uint8Array>) {
  const seen: Record<string, unknown>[] = [];
  let wake: (() => void) | undefined;
  let ended = false;
  (async () => {
    let buf = "";
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      buf += chunk;
      let i;
      while ((i = buf.indexOf("\n")) >= 0) {
        seen.push(JSON.parse(buf.slice(0, i)));
        buf = buf.slice(i + 1);
        wake?.();
      }
    }
    ended = true;
    wake?.();
  })();
  return {
    seen,
    async next(pred: (l: Record<string, unknown>) => boolean) {
      while (true) {
        const hit = seen.find(pred);
        if (hit) return hit;
        if (ended) throw new Error(`stdout ended without the line; saw ${JSON.stringify(seen)}`);
        await new Promise<void>((r) => wake = r);
      }
    },
  };
}

Deno.test("vault-proxy: Machines API resolver, relay, refusal, admin, SIGTERM", async () => {
  const ip = `127.${50 + Math.floor(Math.random() * 150)}.${1 + Math.floor(Math.random() * 250)}.9`;
  const machine = await startEchoServer("0a1b2c3d4e5f60", ip, 8443);
  const other = await startEchoServer("ffff0000000000");
  const requests: string[] = [];
  const api = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    const path = new URL(req.url).pathname;
    requests.push(`${path} ${req.headers.get("authorization")}`);
    if (path === "/v1/apps/vault-tenants/machines/0a1b2c3d4e5f60") {
      return Response.json({ id: "0a1b2c3d4e5f60", state: "started", private_ip: ip });
    }
    return Response.json({ error: "not found" }, { status: 404 });
  });
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      BIN,
      "--listen",
      "127.0.0.1:0",
      "--admin",
      "127.0.0.1:0",
      "--machines-api",
      `http://127.0.0.1:${api.addr.port}`,
      "--app",
      "vault-tenants",
    ],
    env: { FLY_API_TOKEN: "secret-api-token" },
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const out = lines(child.stdout);
  try {
    const listening = await out.next((l) => l.event === "listening");
    const port = Number(String(listening.address).split(":").pop());
    const admin = await out.next((l) => l.event === "admin_listening");
    const conn = await dial({
      hostname: "127.0.0.1",
      port,
      serverName: "0a1b2c3d4e5f60.vault.internal",
      caPem: machine.identity.identityPem,
    });
    assert.equal(
      new TextDecoder().decode(await echo(conn, new TextEncoder().encode("via proxy"))),
      "via proxy",
    );
    const t0 = performance.now();
    const err = await dial({
      hostname: "127.0.0.1",
      port,
      serverName: "ffff0000000000.vault.internal",
      caPem: other.identity.identityPem,
    }).then((c) => (c.close(), undefined), (e: Error) => e);
    assert.match(String(err), /unknown machine ffff0000000000/);
    assert.ok(performance.now() - t0 < 1000);
    const health = await (await fetch(`http://${admin.address}/healthz`)).json();
    assert.equal(health.sessions, 1);
    const metrics = await (await fetch(`http://${admin.address}/metrics`)).text();
    assert.match(metrics, /vault_proxy_refusals_total\{reason="unknown_machine"\} 1/);
    assert.match(metrics, /vault_proxy_resolves_total\{result="ok"\} 1/);
    assert.ok(requests.every((r) => r.endsWith("Bearer secret-api-token")));
    assert.ok(!out.seen.some((l) => JSON.stringify(l).includes("secret-api-token")));
    conn.close();
    child.kill("SIGTERM");
    await out.next((l) => l.event === "stopped");
    const status = await child.status;
    assert.equal(status.code, 0);
  } finally {
    try {
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
    await child.status;
    await api.shutdown();
    machine.close();
    other.close();
  }
});
