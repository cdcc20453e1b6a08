import assert from "node:assert/strict";
import { probeRefused, sockaddrOf } from "./refused.ts";

function closedUdpPort(hostname: string): number {
  const sock = Deno.listenDatagram({ transport: "udp", hostname, port: 0 });
  const port = (sock.addr as Deno.NetAddr).port;
  sock.close();
  return port;
}

Deno.test("sockaddrOf: v4, v6 with ::, v4-mapped; names and scoped addresses are not probed", () => {
  const v4 = sockaddrOf("127.0.0.1", 8443)!;
  assert.deepEqual([...v4.addr.slice(0, 8)], [2, 0, 0x20, 0xfb, 127, 0, 0, 1]);
  const v6 = sockaddrOf("fdaa:0:1::2", 443)!;
  assert.equal(v6.addr.length, 28);
  assert.deepEqual([...v6.addr.slice(8, 12)], [0xfd, 0xaa, 0, 0]);
  assert.deepEqual([...v6.addr.slice(22, 24)], [0, 2]);
  assert.deepEqual([...sockaddrOf("::ffff:1.2.3.4", 1)!.addr.slice(20, 24)], [1, 2, 3, 4]);
  assert.equal(sockaddrOf("vault.example.com", 1), null);
  assert.equal(sockaddrOf("fe80::1%eth0", 1), null);
  assert.equal(sockaddrOf("1:2:3", 1), null);
});

Deno.test("a closed loopback UDP port is heard as refused at once (v4 and v6)", async () => {
  for (const host of ["127.0.0.1", "::1"]) {
    const probe = probeRefused(host, closedUdpPort(host));
    const t0 = performance.now();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const verdict = await Promise.race([
      probe.refused,
      new Promise<string>((r) => timer = setTimeout(() => r("no verdict"), 2000)),
    ]);
    clearTimeout(timer);
    probe.stop();
    assert.equal(verdict, true, host);
    assert.ok(performance.now() - t0 < 1000, `${host}: ${performance.now() - t0} ms`);
  }
});

Deno.test("an open port is never called refused", async () => {
  const sock = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const probe = probeRefused("127.0.0.1", (sock.addr as Deno.NetAddr).port);
  // The probe's datagram arriving is the event: by then any ICMP would have come too.
  const [datagram] = await sock.receive();
  assert.equal(datagram.length, 1);
  const second = await sock.receive();
  assert.equal(second[0].length, 1);
  const verdict = await Promise.race([probe.refused, Promise.resolve("pending")]);
  probe.stop();
  sock.close();
  assert.equal(verdict, "pending");
});
