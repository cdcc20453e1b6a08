/**
 * The batched UDP path on its own: bursts are read and written many datagrams per system call,
 * intact and in order; addresses read from the kernel are spelled as Deno spells them (one
 * session key per peer); IPv6; errors; close.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { bindUdp, resolveUdpImpl } from "./udp.ts";
import {
  bindMmsg,
  formatIPv6,
  mmsgAvailable,
  mmsgStats,
  parseIP,
  raiseUdpBuffers,
} from "./udp_mmsg.ts";

/** Resolves with `p`, or rejects after `ms`. */
function within<T>(ms: number, p: Promise<T>, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms);
  });
  return Promise.race([p, deadline]).finally(() => clearTimeout(timer));
}

Deno.test("mmsg: available here (Linux, --allow-ffi), and auto chooses it", () => {
  assert.equal(mmsgAvailable(), true);
  assert.equal(resolveUdpImpl("auto"), "mmsg");
  assert.equal(resolveUdpImpl("deno"), "deno");
});

Deno.test("mmsg: IPv6 text round-trips and is spelled as WHATWG/RFC 5952 spell it", () => {
  // Addresses rich in zero groups, so the "::" choice (longest run, first on a tie) is exercised.
  const group = fc.oneof(fc.constant(0), fc.constant(0), fc.integer({ min: 0, max: 0xffff }));
  fc.assert(
    fc.property(fc.array(group, { minLength: 8, maxLength: 8 }), (groups) => {
      const b = new Uint8Array(16);
      groups.forEach((g, k) => {
        b[2 * k] = g >> 8;
        b[2 * k + 1] = g & 0xff;
      });
      const text = formatIPv6(b);
      assert.deepEqual(parseIP(text)?.v6, b, text);
      const mapped = b.subarray(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff;
      if (!mapped) assert.equal(`[${text}]`, new URL(`http://[${text}]/`).hostname);
    }),
    { numRuns: 5000 },
  );
  assert.equal(formatIPv6(parseIP("::ffff:127.0.0.1")!.v6), "::ffff:127.0.0.1");
  assert.equal(formatIPv6(parseIP("fdaa:0:1::3")!.v6), "fdaa:0:1::3");
  for (const bad of ["1.2.3", "1.2.3.256", "::1::", "12345::", "fly-global-services", ""]) {
    assert.equal(parseIP(bad), undefined, bad);
  }
});

Deno.test("mmsg: a burst is read and written in batches, every datagram intact and in order", async () => {
  const got: Uint8Array[] = [];
  let wake: (() => void) | undefined;
  const echo = await bindMmsg("127.0.0.1", 0, (d, host, port) => {
    // The receive buffer is reused after this returns: what is kept is copied (send copies too).
    echo.send(d, host, port);
  });
  const client = await bindMmsg("127.0.0.1", 0, (d, host, port) => {
    assert.equal(host, "127.0.0.1");
    assert.equal(port, echo.port);
    got.push(d.slice());
    wake?.();
  });
  try {
    const sent: Uint8Array[] = [];
    for (let i = 0; i < 150; i++) {
      const d = crypto.getRandomValues(new Uint8Array(1 + ((i * 131) % 1200)));
      d[0] = i;
      sent.push(d);
    }
    const before = { ...mmsgStats };
    // Staged in one turn and flushed together: all are in the kernel before the echo wakes.
    for (const d of sent) assert.ok(client.send(d, "127.0.0.1", echo.port));
    while (got.length < sent.length) {
      await within(5000, new Promise<void>((r) => wake = r), `echo ${got.length}/150`);
    }
    assert.deepEqual(got, sent);
    const reads = mmsgStats.recvCalls - before.recvCalls;
    const read = mmsgStats.recvDatagrams - before.recvDatagrams;
    const writes = mmsgStats.sendCalls - before.sendCalls;
    // 300 datagrams moved (150 each way); the first of each wake comes through Deno's receive.
    assert.ok(read >= 250, `only ${read} datagrams came through recvmmsg`);
    assert.ok(reads <= 20, `${reads} recvmmsg calls for ${read} datagrams`);
    assert.equal(mmsgStats.sendDatagrams - before.sendDatagrams, 300);
    assert.ok(writes <= 20, `${writes} sendmmsg calls for 300 datagrams`);
  } finally {
    echo.close();
    client.close();
    await Promise.all([echo.done, client.done]);
  }
});

Deno.test("mmsg: IPv6 peers, and a Deno socket on the other side", async () => {
  const seen: string[] = [];
  const sock = await bindMmsg("::1", 0, (d, host, port) => {
    seen.push(host);
    sock.send(d, host, port);
  });
  const peer = Deno.listenDatagram({ transport: "udp", hostname: "::1", port: 0 });
  try {
    assert.equal(sock.hostname, "::1");
    for (let i = 0; i < 3; i++) {
      await peer.send(new Uint8Array([i, 1, 2]), {
        transport: "udp",
        hostname: "::1",
        port: sock.port,
      });
      const [reply] = await within(5000, peer.receive(), "reply");
      assert.deepEqual(reply, new Uint8Array([i, 1, 2]));
    }
    assert.deepEqual(seen, ["::1", "::1", "::1"]);
  } finally {
    peer.close();
    sock.close();
    await sock.done;
  }
});

Deno.test("mmsg: a port in use is refused as Deno refuses it; sends after close are refused", async () => {
  const a = await bindUdp("mmsg", "127.0.0.1", 0, () => {});
  await assert.rejects(bindUdp("mmsg", "127.0.0.1", a.port, () => {}), Deno.errors.AddrInUse);
  assert.equal(a.send(new Uint8Array(8), "not-an-address", 9), false);
  a.close();
  await a.done;
  assert.equal(a.send(new Uint8Array(8), "127.0.0.1", 9), false);
});

Deno.test("mmsg: on a dual-stack socket a v4 peer has one spelling, whichever way it is read", async () => {
  const seen = new Set<string>();
  let n = 0;
  let wake: (() => void) | undefined;
  const sock = await bindMmsg("::", 0, (_d, host) => {
    seen.add(host);
    n++;
    wake?.();
  });
  const peer = await bindMmsg("127.0.0.1", 0, () => {});
  try {
    // A burst, so some come through Deno's receive and the rest through recvmmsg.
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < 40; i++) peer.send(new Uint8Array([i]), "127.0.0.1", sock.port);
      while (n < 40 * (round + 1)) await within(5000, new Promise<void>((r) => wake = r), "burst");
    }
    assert.deepEqual([...seen], ["::ffff:127.0.0.1"]);
  } finally {
    peer.close();
    sock.close();
    await Promise.all([sock.done, peer.done]);
  }
});

Deno.test("mmsg: a train of equal datagrams goes segmented (GSO) and arrives as the datagrams sent", async () => {
  const got: Uint8Array[] = [];
  let wake: (() => void) | undefined;
  const receiver = await bindMmsg("127.0.0.1", 0, (d) => {
    got.push(d.slice());
    wake?.();
  });
  const sender = await bindMmsg("127.0.0.1", 0, () => {});
  try {
    // 100 of 1200 bytes and a shorter last one, each distinct: trains of up to 54 (64 KB).
    const sent = Array.from({ length: 101 }, (_, i) => {
      const d = crypto.getRandomValues(new Uint8Array(i === 100 ? 300 : 1200));
      d[0] = i;
      return d;
    });
    const before = mmsgStats.gsoSends;
    for (const d of sent) assert.ok(sender.send(d, "127.0.0.1", receiver.port));
    while (got.length < sent.length) {
      await within(5000, new Promise<void>((r) => wake = r), `${got.length}/101`);
    }
    assert.deepEqual(got, sent);
    assert.ok(mmsgStats.gsoSends > before, "no segmented send");
    assert.ok(mmsgStats.gsoSends - before <= 3, `${mmsgStats.gsoSends - before} GSO sends`);
  } finally {
    sender.close();
    receiver.close();
    await Promise.all([sender.done, receiver.done]);
  }
});

Deno.test("mmsg: as root, socket buffers are forced past net.core.rmem_max", async () => {
  assert.equal(Deno.uid(), 0, "this test runs as root, as the proxy does on Fly");
  const max = Number(Deno.readTextFileSync("/proc/sys/net/core/rmem_max").trim());
  const sock = await bindMmsg("127.0.0.1", 0, () => {});
  try {
    // The kernel reports twice what was set; capped, it would report 2 × rmem_max.
    assert.equal(raiseUdpBuffers(sock.port, 2 * max), 4 * max);
  } finally {
    sock.close();
    await sock.done;
  }
});

Deno.test("mmsg: a relayed burst is sent from the receive arena, intact, in order, in GSO trains", async () => {
  const got: Uint8Array[] = [];
  let wake: (() => void) | undefined;
  const sink = await bindMmsg("127.0.0.1", 0, (d) => {
    got.push(d.slice());
    wake?.();
  });
  // The relay sends each datagram on as it was handed over: a view of the receive arena.
  const relay = await bindMmsg("127.0.0.1", 0, (d) => relay.send(d, "127.0.0.1", sink.port));
  const client = await bindMmsg("127.0.0.1", 0, () => {});
  try {
    // Equal lengths (a bulk transfer's: views are reused, trains go as GSO), then mixed ones.
    const sent: Uint8Array[] = [];
    for (let i = 0; i < 300; i++) {
      const d = crypto.getRandomValues(new Uint8Array(i < 200 ? 1200 : 1 + ((i * 131) % 1400)));
      d[0] = i & 0xff;
      sent.push(d);
    }
    const before = { ...mmsgStats };
    for (let at = 0; at < sent.length; at += 100) {
      for (const d of sent.slice(at, at + 100)) assert.ok(client.send(d, "127.0.0.1", relay.port));
      while (got.length < at + 100) {
        await within(5000, new Promise<void>((r) => wake = r), `relay ${got.length}/300`);
      }
    }
    assert.deepEqual(got, sent);
    // The first datagram of each wake comes through Deno's receive (its own buffer: copied).
    const inPlace = mmsgStats.inPlaceSends - before.inPlaceSends;
    assert.ok(inPlace >= 250, `only ${inPlace} of 300 relayed in place`);
    assert.ok(mmsgStats.gsoSends > before.gsoSends, "no GSO train");
  } finally {
    for (const s of [sink, relay, client]) s.close();
    await Promise.all([sink.done, relay.done, client.done]);
  }
});
