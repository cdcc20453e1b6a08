/**
 * The forgery matrix end to end (issue 2): a real init serves each forged
 * attestation, the real client refuses it with the check that failed, and
 * init never receives an Auth message — the access token never left.
 */
import assert from "node:assert/strict";
import { forgeries } from "../src/flysim/forge.ts";
import type { MachineLaunch } from "../src/flysim/runner.ts";
import {
  Attestation,
  AttestRequest,
  FrameReader,
  FrameWriter,
  StreamTag,
} from "../src/protocol/mod.ts";
import { BOOTSTRAP_CA_CERT_PEM, serverNameFor } from "../src/pki/mod.ts";
import { dialQuic } from "../src/transport/mod.ts";
import { type Sim, startSim, TOKEN, vaultFor } from "./harness.ts";

const authAttempts = (logs: string[]) => logs.filter((l) => l.includes('"event":"auth.attempt"'));

/** What a passive observer gets: the genuine server's attestation (identity + token). */
async function captureAttestation(address: string, machineId: string) {
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
  conn.close();
  return reply;
}

Deno.test("every forged attestation is refused before the access token leaves the client", async () => {
  // Machine ids map to forgeries; "genuine" and the impostor get special tokens.
  const plan = new Map<string, (m: MachineLaunch, aud: string) => Promise<string>>();
  let impostorSim: Sim | undefined;
  const sim: Sim = await startSim({
    mint: (m, aud) => {
      const forge = plan.get(m.id);
      if (forge) return forge(m, aud);
      return sim.issuer.mint({
        org: m.org,
        app: m.app,
        machine_id: m.id,
        machine_name: m.name,
        region: m.region,
        image: m.image,
        aud,
      });
    },
  });
  try {
    const vaults: Record<string, Record<string, unknown>> = {};
    const cases = forgeries.map((f, i) => ({ f, id: `f${String(i).padStart(4, "0")}` }));
    for (const { f, id } of cases) {
      plan.set(id, (m, aud) =>
        f.make({
          issuer: sim.issuer,
          identity: { org: m.org, app: m.app, machine_id: m.id, machine_name: m.name },
          audience: aud,
        }));
    }
    const machines = await Promise.all(cases.map(({ id }) => sim.startMachine(id)));
    cases.forEach(({ id }, i) => vaults[id] = vaultFor(sim, machines[i], { machine_id: id }));

    // An impostor claiming to be g0001 (its own identity from the public bootstrap CA, the
    // victim's name in its certificate), replaying the genuine machine's real token
    // captured off the genuine machine's attest stream.
    const genuine = await sim.startMachine("g0001");
    const captured = await captureAttestation(genuine.address, "g0001");
    impostorSim = await startSim({ mint: () => Promise.resolve(captured.token) });
    const impostor = await impostorSim.startMachine("g0001");
    vaults.impostor = vaultFor(sim, impostor, { machine_id: "g0001" });
    vaults.genuine = vaultFor(sim, genuine, { machine_id: "g0001" });
    await sim.writeConfig(vaults);

    const run = (vault: string) => sim.client(["exec", "-n", vault, "--", "true"]);
    const results = await Promise.all(cases.map(({ id }) => run(id)));
    cases.forEach(({ f }, i) => {
      const r = results[i];
      assert.equal(r.code, 255, `${f.name}: exit ${r.code}\n${r.stderr}`);
      assert.ok(r.stderr.includes(`error[${f.expectCode}]`), `${f.name}: ${r.stderr}`);
      assert.match(r.stderr, /\nhint: /, f.name);
      assert.deepEqual(authAttempts(machines[i].logs), [], `${f.name}: init saw an Auth message`);
      assert.ok(!r.stderr.includes(TOKEN));
    });

    const replay = await run("impostor");
    assert.equal(replay.code, 255, `${replay.code} ${replay.stdout} ${replay.stderr}`);
    // Its own identity's binding is not the one in the genuine token.
    assert.match(replay.stderr, /error\[attest\.wrong_audience\]/);
    assert.deepEqual(authAttempts(impostor.logs), [], "the impostor never saw an Auth message");

    // Control: the genuine machine, configured the same way, is accepted.
    const ok = await run("genuine");
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(authAttempts(genuine.logs).length, 1);
  } finally {
    await impostorSim?.close();
    await sim.close();
  }
});
