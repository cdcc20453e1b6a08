import assert from "node:assert/strict";
import { join } from "node:path";
import {
  Attestation,
  AttestRequest,
  FrameReader,
  FrameWriter,
  StreamTag,
} from "../protocol/mod.ts";
import { createMachineIdentity, type MachineIdentity } from "../pki/mod.ts";
import { VaultError } from "../errors/mod.ts";
import {
  type DialEvent,
  dialVault,
  listenQuic,
  readKnownVaults,
  rememberKnownVault,
  TRUST_ENV_VARS,
} from "./mod.ts";

// dialVault refuses a process whose roots were widened (trust_env.ts), and this sandbox sets
// NODE_EXTRA_CA_CERTS. Deno builds its root store at first use, so clearing the variables
// before any TLS makes this process's store Mozilla's alone; the servers here are issued by
// the bootstrap CA, which no system bundle holds anyway. The guard itself is tested through
// the real client (tests/trust_e2e_test.ts).
for (const name of TRUST_ENV_VARS) Deno.env.delete(name);

/** A server that attests `identity` with token `tokenFor(identity)` and echoes on exec streams. */
function serve(identity: MachineIdentity, token: string) {
  const listener = listenQuic({
    hostname: "127.0.0.1",
    port: 0,
    certChainPem: identity.chainPem,
    keyPem: identity.leafKeyPem,
  });
  const tags: number[] = [];
  (async () => {
    for await (const conn of listener.connections()) {
      (async () => {
        for await (const s of conn.incoming()) {
          tags.push(s.tag);
          const r = new FrameReader(s.readable);
          const w = new FrameWriter(s.writable);
          if (s.tag === StreamTag.attest) {
            await r.message(AttestRequest);
            await w.send(Attestation.parse({
              type: "attestation",
              identity: btoa(String.fromCharCode(...identity.identityDer)),
              token,
            }));
          } else {
            const f = await r.next();
            if (f?.kind === "data") await w.data(2, f.bytes);
          }
          await w.close();
        }
      })();
    }
  })();
  return { listener, tags, address: `127.0.0.1:${listener.addr.port}` };
}

/** Stands in for the OIDC verifier: a token `genuine:<machine>:<audience>` is genuine for that audience. */
const verify = (token: string, audience: string): Promise<{ machine_id: string }> => {
  const m = /^genuine:([^:]+):(.*)$/.exec(token);
  return m && m[2] === audience
    ? Promise.resolve({ machine_id: m[1] })
    : Promise.reject(new VaultError("attest.wrong_audience", "token is bound to another identity"));
};

const expected = { org: "o", app: "a", issuer: "https://oidc.example" };

async function echo(conn: Awaited<ReturnType<typeof dialVault>>["conn"]): Promise<string> {
  const s = await conn.openStream(StreamTag.exec);
  const w = new FrameWriter(s.writable);
  await w.data(1, new TextEncoder().encode("ping"));
  const f = await new FrameReader(s.readable).next();
  assert.ok(f?.kind === "data");
  return new TextDecoder().decode(f.bytes);
}

Deno.test("attest, pin, then reconnect on the pin without attesting", async () => {
  const dir = await Deno.makeTempDir();
  const knownVaultsPath = join(dir, "known_vaults");
  const first = await createMachineIdentity({ machineId: "m1" });
  const server = serve(first, `genuine:m1:${first.audience}`);
  const events: DialEvent[] = [];
  const opts = {
    name: "dev",
    address: server.address,
    machineId: "m1",
    expected,
    knownVaultsPath,
    verifyAttestation: verify,
    onEvent: (e: DialEvent) => events.push(e),
  };
  const a = await dialVault(opts);
  assert.equal(a.attested, true);
  assert.equal(await echo(a.conn), "ping");
  a.conn.close();
  const stat = await Deno.stat(knownVaultsPath);
  assert.equal(stat.mode! & 0o777, 0o600);

  const b = await dialVault(opts);
  assert.equal(b.attested, false, "a pinned vault reconnects without attesting");
  b.conn.close();
  server.listener.close();
});

Deno.test("a stale pin (machine restarted with a new identity) sends the client back to attestation", async () => {
  const dir = await Deno.makeTempDir();
  const knownVaultsPath = join(dir, "known_vaults");
  const old = await createMachineIdentity({ machineId: "m1" });
  const current = await createMachineIdentity({ machineId: "m1" });
  const server = serve(current, `genuine:m1:${current.audience}`);
  await rememberKnownVault(knownVaultsPath, {
    name: "dev",
    address: server.address,
    ...expected,
    machineId: "m1",
    identityDer: old.identityDer,
  });
  const events: DialEvent[] = [];
  const c = await dialVault({
    name: "dev",
    address: server.address,
    machineId: "m1",
    expected,
    knownVaultsPath,
    verifyAttestation: verify,
    onEvent: (e) => events.push(e),
  });
  assert.equal(c.attested, true);
  assert.deepEqual(events, [{ type: "attesting", reason: "pin-failed" }, {
    type: "attested",
    machineId: "m1",
  }]);
  assert.equal(await echo(c.conn), "ping");
  c.conn.close();
  const known = await readKnownVaults(knownVaultsPath);
  assert.equal(known.length, 1);
  assert.deepEqual(known[0].identityDer, current.identityDer);
  server.listener.close();
});

Deno.test("an impostor replaying a genuine token is refused before anything else is opened", async () => {
  const dir = await Deno.makeTempDir();
  const genuine = await createMachineIdentity({ machineId: "m1" });
  const impostor = await createMachineIdentity({ machineId: "m1" }); // anyone can use the public bootstrap CA
  const server = serve(impostor, `genuine:m1:${genuine.audience}`);
  await assert.rejects(
    dialVault({
      name: "dev",
      address: server.address,
      machineId: "m1",
      expected,
      knownVaultsPath: join(dir, "known_vaults"),
      verifyAttestation: verify,
    }),
    (err: unknown) => err instanceof VaultError && err.code === "attest.wrong_audience",
  );
  assert.deepEqual(server.tags, [StreamTag.attest], "only the attest stream was ever opened");
  assert.deepEqual(await readKnownVaults(join(dir, "known_vaults")), []);
  server.listener.close();
});

Deno.test("a silent address fails within the timeout with a hint", async () => {
  const dir = await Deno.makeTempDir();
  // Bound but never answering: no ICMP comes back, so only the deadline ends the dial.
  const silent = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const started = performance.now();
  await assert.rejects(
    dialVault({
      name: "dev",
      address: `127.0.0.1:${(silent.addr as Deno.NetAddr).port}`,
      expected,
      knownVaultsPath: join(dir, "kv"),
      verifyAttestation: verify,
      timeoutMs: 500,
    }),
    (err: unknown) => err instanceof VaultError && err.code === "transport.unreachable",
  );
  silent.close();
  assert.ok(performance.now() - started < 3000);
});

Deno.test("a closed port is refused at once, not at the deadline", async () => {
  const dir = await Deno.makeTempDir();
  const started = performance.now();
  await assert.rejects(
    dialVault({
      name: "dev",
      address: "127.0.0.1:9", // discard port: nothing listens, the kernel answers ICMP
      expected,
      knownVaultsPath: join(dir, "kv"),
      verifyAttestation: verify,
      timeoutMs: 5000,
    }),
    (err: unknown) => err instanceof VaultError && err.code === "transport.refused",
  );
  assert.ok(performance.now() - started < 2000, `${performance.now() - started} ms`);
});
