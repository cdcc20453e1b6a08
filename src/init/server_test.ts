/**
 * init's pre-authentication bounds, on a real QUIC server in this process:
 * the authentication deadline, eviction when the table of unauthenticated
 * connections is full, and the cap on attestations per connection.
 */
import assert from "node:assert/strict";
import { BOOTSTRAP_CA_CERT_PEM, createMachineIdentity, serverNameFor } from "../pki/mod.ts";
import {
  ALPN,
  AuthReply,
  encodeMessage,
  ErrorMessage,
  FrameReader,
  PROTOCOL_VERSION,
  StreamTag,
} from "../protocol/mod.ts";
import { type PreAuthLimits, startInitServer } from "./server.ts";

const ID = "srvtest01";
const TOKEN = "a-token-long-enough-for-this-test-0123456789";
const identity = await createMachineIdentity({ machineId: ID });

function start(preAuth: Partial<PreAuthLimits>, tokenFetches = { n: 0 }) {
  return startInitServer({
    hostname: "127.0.0.1",
    port: 0,
    identity,
    machineId: ID,
    accessToken: TOKEN,
    tokenSource: { get: () => Promise.resolve(`token-${++tokenFetches.n}`) },
    store: { rootfsDir: "/nonexistent", status: () => ({ state: "unprovisioned" }) },
    preAuth,
  });
}

function dial(port: number, source = "127.0.0.1") {
  const endpoint = new Deno.QuicEndpoint({ hostname: source, port: 0 });
  return Deno.connectQuic<false>({
    hostname: "127.0.0.1",
    port,
    serverName: serverNameFor(ID),
    alpnProtocols: [ALPN],
    caCerts: [BOOTSTRAP_CA_CERT_PEM],
    endpoint,
    maxIdleTimeout: 10_000,
  }).then((conn) => ({ conn, endpoint }));
}

async function stream(conn: Deno.QuicConn, tag: StreamTag, ...messages: unknown[]) {
  const s = await conn.createBidirectionalStream();
  const w = s.writable.getWriter();
  await w.write(new Uint8Array([tag]));
  for (const m of messages) await w.write(encodeMessage(m));
  return new FrameReader(s.readable);
}

const hello = { type: "hello", protocol: PROTOCOL_VERSION, client: "t" };

Deno.test("a connection that does not authenticate in time is closed; an authenticated one stays", async () => {
  const server = start({ deadlineMs: 300 });
  const a = await dial(server.port);
  const b = await dial(server.port);
  try {
    const reply = await (await stream(b.conn, StreamTag.control, hello, {
      type: "auth",
      token: TOKEN,
    })).message(AuthReply);
    assert.equal(reply.type, "auth_ok");
    const started = performance.now();
    const closed = await a.conn.closed;
    assert.equal(closed.reason, "authentication deadline passed");
    assert.ok(performance.now() - started < 2_000);
    // The authenticated connection outlived the deadline and still answers.
    const control = await stream(b.conn, StreamTag.exec, { type: "exec", argv: ["true"] });
    const answer = await control.message(ErrorMessage);
    assert.equal(answer.code, "vault.not_provisioned", "served, not told to authenticate");
  } finally {
    b.conn.close();
    a.endpoint.close();
    b.endpoint.close();
    server.close();
  }
});

Deno.test("when the table is full, the source holding the most loses its oldest connection", async () => {
  const server = start({ maxUnauthenticated: 4 });
  const conns: Awaited<ReturnType<typeof dial>>[] = [];
  try {
    // Three from the guesser's address, one from a user's, then one more from elsewhere.
    for (const source of ["127.0.0.2", "127.0.0.2", "127.0.0.3", "127.0.0.2"]) {
      conns.push(await dial(server.port, source));
      // Handshake done on our side; let init's accept loop take it before the next one.
      await stream(conns.at(-1)!.conn, StreamTag.attest, { type: "attest" }).then((r) => r.next());
    }
    conns.push(await dial(server.port, "127.0.0.4"));
    const evicted = await conns[0].conn.closed;
    assert.equal(evicted.reason, "too many unauthenticated connections");
    // The user's connection is still served.
    const reply = await (await stream(conns[2].conn, StreamTag.control, hello, {
      type: "auth",
      token: TOKEN,
    })).message(AuthReply);
    assert.equal(reply.type, "auth_ok");
  } finally {
    for (const c of conns) {
      try {
        c.conn.close();
      } catch { /* gone */ }
      c.endpoint.close();
    }
    server.close();
  }
});

Deno.test("a stranger cannot make init fetch attestation tokens without end", async () => {
  const fetches = { n: 0 };
  const server = start({ maxAttestPerConnection: 2 }, fetches);
  const { conn, endpoint } = await dial(server.port);
  try {
    for (let i = 0; i < 2; i++) {
      const r = await stream(conn, StreamTag.attest, { type: "attest" });
      assert.equal(
        ((await r.next()) as { kind: string; message: { type: string } }).message.type,
        "attestation",
      );
    }
    const third = await (await stream(conn, StreamTag.attest, { type: "attest" })).message(
      ErrorMessage,
    );
    assert.equal(third.code, "attest.too_many");
    assert.equal(fetches.n, 2);
  } finally {
    conn.close();
    endpoint.close();
    server.close();
  }
});
