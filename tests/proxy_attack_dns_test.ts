/**
 * The environment as an attacker: a DNS server that never answers the peers' name
 * (`--peers-dns`). vault-proxy reads it before it listens, so each read has a deadline well below
 * Deno's own (15 s per record type, read one after the other: 30 s).
 */
import assert from "node:assert/strict";
import { PEERS_DNS_TIMEOUT_MS, peersFromDns } from "../src/proxy/run.ts";

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
