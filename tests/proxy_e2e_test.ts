/**
 * Issue 6 end to end: two flysim machines (real fly-vault-init processes)
 * behind one vault-proxy; the real client, configured with the proxy's
 * address and each vault's machine_id, reaches each machine concurrently —
 * checked by the attested machine id and by exec output — and a vault whose
 * machine does not exist fails fast with "unknown machine". Run on the JS
 * data path (deno) and on the batched one (mmsg, issue 11.1).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { mmsgStats, startProxy, type UdpImpl } from "../src/proxy/mod.ts";
import { startSim, vaultFor } from "./harness.ts";

for (const udp of ["deno", "mmsg"] as UdpImpl[]) {
  Deno.test(`proxy e2e (${udp}): two machines behind one proxy, each client reaches its own`, () =>
    twoMachines(udp));
}

async function twoMachines(udp: UdpImpl) {
  const batched = mmsgStats.recvCalls;
  const sim = await startSim();
  const ids = ["e2e0a0000000a1", "e2e0b0000000b2"];
  const proxy = await startProxy({
    listen: { hostname: "127.0.0.1", port: 0 },
    udp,
    resolver: (id) => {
      const m = sim.machines.get(id);
      if (!m) return Promise.resolve({ ok: false, reason: "unknown", detail: `no machine ${id}` });
      const [hostname, port] = m.address.split(":");
      return Promise.resolve({ ok: true, backend: { hostname, port: Number(port) } });
    },
    log: () => {},
  });
  try {
    const vaults: Record<string, Record<string, unknown>> = {};
    for (const id of ids) {
      const m = await sim.startMachine(id);
      // A file only this machine's rootfs has: exec output proves which machine answered.
      await Deno.writeTextFile(join(sim.dir, "volumes", id, "rootfs", "etc", "vault-machine"), id);
      vaults[id] = vaultFor(sim, m, {
        address: `127.0.0.1:${proxy.port}`,
        machine_id: id,
      });
    }
    vaults.ghost = vaultFor(sim, sim.machines.get(ids[0])!, {
      address: `127.0.0.1:${proxy.port}`,
      machine_id: "e2e0c0000000c3",
    });
    await sim.writeConfig(vaults);

    const results = await Promise.all(ids.flatMap((id) => [
      sim.client(["exec", "-n", id, "--", "cat", "/etc/vault-machine"]),
      sim.client(["status", "--json", id]),
    ]));
    for (const [i, id] of ids.entries()) {
      const exec = results[2 * i];
      const status = results[2 * i + 1];
      assert.equal(exec.code, 0, exec.stderr);
      assert.equal(exec.stdout, id);
      assert.equal(status.code, 0, status.stderr);
      assert.equal(JSON.parse(status.stdout).machine_id, id);
    }
    assert.ok(proxy.stats.opened >= 4, JSON.stringify(proxy.stats));

    const ghost = await sim.client(["exec", "-n", "ghost", "--", "true"]);
    assert.notEqual(ghost.code, 0);
    assert.match(ghost.stderr, /unknown machine e2e0c0000000c3/);
    // The whole CLI run (Deno start, config, attest attempt) and not a QUIC timeout (seconds).
    console.log(`unknown machine: the CLI exited after ${Math.round(ghost.ms)} ms`);
    assert.ok(ghost.ms < 3000, `${ghost.ms} ms`);
    assert.ok(proxy.stats.refusals.unknown_machine >= 1);
    // The batched path served the proxy's sockets (each wake drains with recvmmsg), and only
    // when chosen.
    if (udp === "mmsg") assert.ok(mmsgStats.recvCalls > batched, "recvmmsg was never called");
    else assert.equal(mmsgStats.recvCalls, batched);
  } finally {
    await proxy.close();
    await sim.close();
  }
}
