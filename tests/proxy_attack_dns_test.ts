/**
 * The environment as an attacker: a DNS server that never answers the peers' name
 * (`--peers-dns`). vault-proxy reads it before it listens, so each read has a deadline well below
 * Deno's own (15 s per record type, read one after the other: 30 s).
 */
import assert from "node:assert/strict";
import { PEERS_DNS_TIMEOUT_MS, peersFromDns } from "../src/proxy/run.ts";
import { templateResolver } from "../src/proxy/resolver.ts";

Deno.test("vault-proxy: a DNS server that never answers the peers' name costs 2 s, not 30", async () => {
  const silent = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  try {
    const t0 = performance.now();
    const found = await peersFromDns(
      { name: "vault-proxy.internal", port: 4434 },
      { hostname: "127.0.0.1", port: 4434 },
      { ipAddr: "127.0.0.1", port: (silent.addr as Deno.NetAddr).port },
    );
    const ms = performance.now() - t0;
    assert.equal(found, undefined, "no answer keeps the last list");
    assert.ok(ms < PEERS_DNS_TIMEOUT_MS + 1_500, `took ${Math.round(ms)} ms`);
  } finally {
    silent.close();
  }
});

Deno.test("vault-proxy: a DNS server that never answers a machine's name fails its route in 6 s, not 30", async () => {
  const silent = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  try {
    const resolve = templateResolver("{machine_id}.vm.vault-tenants.internal:8443", undefined, {
      nameServer: { ipAddr: "127.0.0.1", port: (silent.addr as Deno.NetAddr).port },
    });
    const t0 = performance.now();
    const r = await resolve("abc0000000001");
    const ms = performance.now() - t0;
    assert.ok(!r.ok && r.reason === "error", JSON.stringify(r));
    assert.ok(ms < 7_500, `took ${Math.round(ms)} ms`);
  } finally {
    silent.close();
  }
});
