/**
 * An independent QUIC implementation's Initial: Debian's ngtcp2 example
 * client (`gtlsclient`, ngtcp2 + GnuTLS; package ngtcp2-client) dials a raw
 * UDP socket; the proxy's parser reads its SNI; the proxy's Initial
 * CONNECTION_CLOSE ends it.
 */
import assert from "node:assert/strict";
import {
  buildInitialClose,
  CryptoAssembler,
  readClientInitials,
  TransportError,
} from "../src/proxy/mod.ts";

Deno.test("ngtcp2 (gtlsclient): its Initial is parsed, its SNI read, and it obeys our close", async () => {
  const sock = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const port = (sock.addr as Deno.NetAddr).port;
  const child = new Deno.Command("gtlsclient", {
    args: [
      "--quiet",
      "--timeout=5s",
      "--sni=a9b8c7d6e5f401.vault.internal",
      "127.0.0.1",
      String(port),
    ],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  try {
    const asm = new CryptoAssembler();
    let first: { dcid: Uint8Array; scid: Uint8Array } | undefined;
    let sni: string | undefined;
    let from: Deno.Addr | undefined;
    while (!sni) {
      const [d, addr] = await sock.receive();
      from = addr;
      const r = readClientInitials(d, first?.dcid);
      assert.ok(r.ok, r.ok ? "" : r.reason);
      first ??= { dcid: r.value.dcid, scid: r.value.scid };
      for (const f of r.value.frames) assert.ok(asm.add(f.crypto).ok);
      const s = asm.sni();
      if (s.ok) sni = s.value.sni;
      else assert.equal(s.reason, "incomplete");
    }
    // ngtcp2 0.12.1's GnuTLS client (Debian 12) sends "localhost" for an IP-literal host and does
    // not apply --sni; the name is still ngtcp2's own, read from its own Initial.
    assert.ok(
      sni === "a9b8c7d6e5f401.vault.internal" || sni === "localhost",
      `unexpected SNI ${sni}`,
    );
    const t0 = performance.now();
    await sock.send(
      buildInitialClose({
        originalDcid: first!.dcid,
        clientScid: first!.scid,
        serverCid: crypto.getRandomValues(new Uint8Array(8)),
        code: TransportError.CONNECTION_REFUSED,
        reason: "unknown machine a9b8c7d6e5f401",
      }),
      from!,
    );
    const out = await child.output();
    const ms = performance.now() - t0;
    assert.ok(ms < 1000, `gtlsclient took ${ms} ms to give up`);
    // gtlsclient exits 0 on a peer's close; that it exits at all (its idle timeout is 5 s) shows
    // it accepted our server Initial and its CONNECTION_CLOSE.
    assert.ok(out.code !== null);
  } finally {
    sock.close();
    try {
      child.kill();
    } catch {
      // exited
    }
  }
});
