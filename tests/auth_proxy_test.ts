/**
 * Guessers cannot lock a tenant out (issue 13.4): through the real
 * vault-proxy every client reaches init from the proxy's address, so a
 * throttle keyed by address made a handful of guessing connections turn the
 * legitimate user away with `auth.busy`. Here 20 connections from 20 other
 * source addresses keep guessing wrong tokens through the proxy while a
 * legitimate client authenticates, each time within 1 s, and the real
 * `fly-vault status` gets through too.
 */
import assert from "node:assert/strict";
import { BOOTSTRAP_CA_CERT_PEM, serverNameFor } from "../src/pki/mod.ts";
import {
  ALPN,
  AuthReply,
  encodeMessage,
  FrameReader,
  PROTOCOL_VERSION,
  StreamTag,
} from "../src/protocol/mod.ts";
import { splitHostPort, startProxy } from "../src/proxy/mod.ts";
import { startSim, TOKEN, vaultFor } from "./harness.ts";

const MACHINE = "authproxy01";

/** One authentication attempt on a fresh connection from `source`: the reply, or "closed". */
async function attempt(
  proxy: { hostname: string; port: number },
  source: string,
  token: string,
  stop?: AbortSignal,
): Promise<{ reply: string; ms: number }> {
  const started = performance.now();
  const endpoint = new Deno.QuicEndpoint({ hostname: source, port: 0 });
  let conn: Deno.QuicConn | undefined;
  try {
    conn = await Deno.connectQuic<false>({
      hostname: proxy.hostname,
      port: proxy.port,
      serverName: serverNameFor(MACHINE),
      alpnProtocols: [ALPN],
      // The public bootstrap CA: anyone can get this far, which is what a guesser does.
      caCerts: [BOOTSTRAP_CA_CERT_PEM],
      endpoint,
      maxIdleTimeout: 10_000,
    });
    const stream = await conn.createBidirectionalStream();
    const w = stream.writable.getWriter();
    await w.write(new Uint8Array([StreamTag.control]));
    await w.write(encodeMessage({ type: "hello", protocol: PROTOCOL_VERSION, client: "t" }));
    await w.write(encodeMessage({ type: "auth", token }));
    const reader = new FrameReader(stream.readable);
    const reading = reader.message(AuthReply, "auth reply").then(
      (r) => r.type === "error" ? r.code : r.type,
      () => "closed",
    );
    const stopped = new Promise<string>((r) => stop?.addEventListener("abort", () => r("stopped")));
    return { reply: await Promise.race([reading, stopped]), ms: performance.now() - started };
  } catch {
    return { reply: "closed", ms: performance.now() - started };
  } finally {
    try {
      conn?.close({ closeCode: 0, reason: "" });
    } catch { /* gone */ }
    endpoint.close();
  }
}

Deno.test({
  name: "through vault-proxy, 20 guessing sources never keep the right token out",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const sim = await startSim();
    const stop = new AbortController();
    const guessers: Promise<void>[] = [];
    const proxy = await (async () => {
      const m = await sim.startMachine(MACHINE);
      const { host, port } = splitHostPort(m.address)!;
      return await startProxy({
        listen: { hostname: "127.0.0.1", port: 0 },
        resolver: (id) =>
          Promise.resolve(
            id === MACHINE
              ? { ok: true, backend: { hostname: host, port } }
              : { ok: false, reason: "unknown", detail: "no such machine" },
          ),
        log: () => {},
      });
    })();
    try {
      const m = sim.machines.get(MACHINE)!;
      const replies: string[] = [];
      for (let i = 0; i < 20; i++) {
        guessers.push((async () => {
          while (!stop.signal.aborted) {
            const r = await attempt(proxy, `127.0.0.${i + 2}`, `wrong-${i}`, stop.signal);
            replies.push(r.reply);
          }
        })());
      }
      // Wait until init has heard every guesser at least once (checked, or refused busy).
      const deadline = Date.now() + 20_000;
      const heard = () => m.logs.filter((l) => /"auth\.(checked|busy)"/.test(l)).length;
      while (heard() < 20) {
        assert.ok(Date.now() < deadline, `guessers not heard: ${heard()}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      for (let round = 0; round < 3; round++) {
        const legit = await attempt(proxy, "127.0.0.1", TOKEN);
        assert.equal(legit.reply, "auth_ok", `round ${round}: the right token got ${legit.reply}`);
        assert.ok(legit.ms < 1_000, `round ${round}: authenticated in ${legit.ms.toFixed(0)} ms`);
      }
      // The real client, as a user runs it, through the proxy while the guessing goes on.
      await sim.writeConfig({
        viaproxy: vaultFor(sim, m, { address: `127.0.0.1:${proxy.port}`, machine_id: MACHINE }),
      });
      const status = await sim.client(["status", "--json", "viaproxy"]);
      assert.equal(status.code, 0, status.stderr);
      assert.equal(JSON.parse(status.stdout).machine_id, MACHINE);
      const accepted = m.logs.filter((l) =>
        l.includes('"auth.attempt"') && l.includes('"ok":true')
      );
      assert.ok(accepted.length >= 4);
      assert.ok(
        accepted.every((l) => l.includes('"delayed_ms":0')),
        "the right token never waited",
      );
      assert.ok(!replies.includes("auth_ok"), "no guess got in");
      assert.ok(!m.logs.some((l) => l.includes('"auth.busy"')), "nobody was told busy");
    } finally {
      stop.abort();
      await Promise.all(guessers);
      await proxy.close();
      await sim.close();
    }
  },
});
