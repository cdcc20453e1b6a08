/**
 * Port forwards end to end over loopback streams: many concurrent
 * connections carrying 10 MiB each, half-close, a refused remote failing
 * only its own connection, and a local port in use as a clear error.
 */
import assert from "node:assert/strict";
import { isVaultError } from "../src/errors/mod.ts";
import { type OpenStream, serveForward, startForward, tcpByteStream } from "../src/forward/mod.ts";
import { createMachineIdentity, serverNameFor } from "../src/pki/mod.ts";
import { FrameReader, FrameWriter, StreamTag } from "../src/protocol/mod.ts";
import { dialQuic, listenQuic } from "../src/transport/mod.ts";
import { startLoopbackServer } from "./console_loopback.ts";

interface ForwardServer {
  openStream: OpenStream;
  close(): Promise<void>;
}

/** The init side on the test stand-in transport (a TCP connection per stream). */
function forwardServer(): ForwardServer {
  return startLoopbackServer((tag, reader, writer) =>
    tag === StreamTag.forward ? serveForward(reader, writer) : Promise.resolve()
  );
}

const identity = createMachineIdentity({ machineId: "m-forward" });

/**
 * The init side on the real QUIC transport, in this process. Here the
 * stream → socket direction is Deno's native pipe (a QUIC receive stream is
 * resource-backed), which the stand-in never exercises.
 */
async function quicForwardServer(): Promise<ForwardServer> {
  const id = await identity;
  const listener = listenQuic({
    hostname: "127.0.0.1",
    port: 0,
    certChainPem: id.chainPem,
    keyPem: id.leafKeyPem,
  });
  const serving = (async () => {
    for await (const conn of listener.connections()) {
      (async () => {
        for await (const stream of conn.incoming()) {
          if (stream.tag !== StreamTag.forward) continue;
          serveForward(new FrameReader(stream.readable), new FrameWriter(stream.writable))
            .catch(() => {});
        }
      })();
    }
  })();
  const conn = await dialQuic({
    address: `127.0.0.1:${listener.addr.port}`,
    serverName: serverNameFor("m-forward"),
    caPem: id.identityPem,
    timeoutMs: 5000,
  });
  return {
    openStream: (tag) => conn.openStream(tag),
    async close() {
      await conn.close();
      listener.close();
      await serving;
    },
  };
}

const transports = { loopback: () => Promise.resolve(forwardServer()), quic: quicForwardServer };

/** A TCP server on loopback; `serve` gets each connection as a half-closable byte stream. */
function tcpServer(serve: (s: ReturnType<typeof tcpByteStream>) => Promise<void>) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const tasks: Promise<void>[] = [];
  const accepting = (async () => {
    try {
      for await (const c of listener) tasks.push(serve(tcpByteStream(c)).catch(() => {}));
    } catch {
      // closed
    }
  })();
  return {
    port: (listener.addr as Deno.NetAddr).port,
    async close() {
      listener.close();
      await accepting;
      await Promise.all(tasks);
    },
  };
}

const echo = (s: ReturnType<typeof tcpByteStream>) => s.readable.pipeTo(s.writable);

function pattern(seed: number, size: number): Uint8Array {
  const out = new Uint8Array(size);
  let x = seed * 2654435761 >>> 0 || 1;
  for (let i = 0; i < size; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

async function connect(port: number) {
  const c = await Deno.connect({ hostname: "127.0.0.1", port });
  return tcpByteStream(c);
}

async function readAll(r: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  return new Uint8Array(await new Response(r).arrayBuffer());
}

for (const [kind, start] of Object.entries(transports)) {
  Deno.test({
    name: `forward (${kind}): 20 concurrent connections × 10 MiB echo byte-for-byte`,
    sanitizeResources: false,
    sanitizeOps: false,
    async fn() {
      const server = await start();
      const target = tcpServer(echo);
      const fwd = startForward(server.openStream, `0:127.0.0.1:${target.port}`);
      try {
        const size = 10 * 1024 * 1024;
        await Promise.all(Array.from({ length: 20 }, async (_, i) => {
          const data = pattern(i + 1, size);
          const s = await connect(fwd.addr.port);
          const w = s.writable.getWriter();
          const [back] = await Promise.all([
            readAll(s.readable),
            (async () => {
              for (let off = 0; off < size; off += 1 << 20) {
                await w.write(data.subarray(off, off + (1 << 20)));
              }
              await w.close();
            })(),
          ]);
          assert.equal(back.length, size, `connection ${i} length`);
          assert.ok(Buffer.from(back).equals(Buffer.from(data)), `connection ${i} bytes differ`);
        }));
      } finally {
        await fwd.close();
        await target.close();
        await server.close();
      }
    },
  });
}

for (const [kind, start] of Object.entries(transports)) {
  Deno.test({
    name: `forward (${kind}): half-close — the server reads to EOF, then answers`,
    sanitizeResources: false,
    sanitizeOps: false,
    async fn() {
      const server = await start();
      const target = tcpServer(async (s) => {
        const got = await readAll(s.readable);
        const w = s.writable.getWriter();
        await w.write(new TextEncoder().encode(`got ${got.length} bytes`));
        await w.close();
      });
      const fwd = startForward(server.openStream, `127.0.0.1:0:localhost:${target.port}`);
      try {
        const s = await connect(fwd.addr.port);
        const w = s.writable.getWriter();
        await w.write(new Uint8Array(123_456));
        await w.close(); // our half only: the answer must still come back
        assert.equal(new TextDecoder().decode(await readAll(s.readable)), "got 123456 bytes");
      } finally {
        await fwd.close();
        await target.close();
        await server.close();
      }
    },
  });
}

for (const [kind, start] of Object.entries(transports)) {
  Deno.test({
    name:
      `forward (${kind}): a refused remote fails that connection only; the listener keeps going`,
    sanitizeResources: false,
    sanitizeOps: false,
    async fn() {
      const server = await start();
      // A port with nothing listening (bound then released).
      const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const deadPort = (probe.addr as Deno.NetAddr).port;
      probe.close();
      const errors: string[] = [];
      const target = tcpServer(echo);
      const dead = startForward(server.openStream, `0:127.0.0.1:${deadPort}`, {
        onError: (l) => errors.push(l),
      });
      const live = startForward(server.openStream, `0:127.0.0.1:${target.port}`);
      try {
        const [refusedBytes, echoed] = await Promise.all([
          (async () => {
            const s = await connect(dead.addr.port);
            return await readAll(s.readable).catch(() => new Uint8Array(0));
          })(),
          (async () => {
            const s = await connect(live.addr.port);
            const w = s.writable.getWriter();
            await w.write(new TextEncoder().encode("still fine"));
            await w.close();
            return new TextDecoder().decode(await readAll(s.readable));
          })(),
        ]);
        assert.equal(refusedBytes.length, 0);
        assert.equal(echoed, "still fine");
        assert.equal(errors.length, 1);
        assert.match(
          errors[0],
          new RegExp(`127\\.0\\.0\\.1:${deadPort}.*(refused|Connection)`, "i"),
        );
        // The listener still accepts: a second attempt is reported again, not a crash.
        const s2 = await connect(dead.addr.port);
        await readAll(s2.readable).catch(() => {});
        assert.equal(errors.length, 2);
      } finally {
        await dead.close();
        await live.close();
        await target.close();
        await server.close();
      }
    },
  });
}

Deno.test("forward: a local port already in use is a clear error at start", () => {
  const taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const port = (taken.addr as Deno.NetAddr).port;
    assert.throws(
      () => startForward(() => Promise.reject(new Error("unused")), `${port}:localhost:80`),
      (err: unknown) => {
        assert.ok(isVaultError(err, "forward.port_in_use"), String(err));
        assert.match(err.message, new RegExp(`127\\.0\\.0\\.1:${port} is already in use`));
        return true;
      },
    );
  } finally {
    taken.close();
  }
});

Deno.test({
  name:
    "forward: a stream that breaks (connection just died) is retried once on the next connection",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const server = forwardServer();
    const target = tcpServer(echo);
    let calls = 0;
    const flaky = (tag: Parameters<typeof server.openStream>[0]) =>
      ++calls === 1 ? Promise.reject(new Error("connection lost")) : server.openStream(tag);
    const errors: string[] = [];
    const fwd = startForward(flaky, `0:127.0.0.1:${target.port}`, {
      onError: (l) => errors.push(l),
    });
    try {
      const s = await connect(fwd.addr.port);
      const w = s.writable.getWriter();
      await w.write(new TextEncoder().encode("after a reconnect"));
      await w.close();
      assert.equal(new TextDecoder().decode(await readAll(s.readable)), "after a reconnect");
      assert.equal(calls, 2);
      assert.deepEqual(errors, []);
    } finally {
      await fwd.close();
      await target.close();
      await server.close();
    }
  },
});

/** Resolves with `p`, or with `"timeout"` once `ms` have passed. */
function within<T>(p: Promise<T>, ms: number): Promise<T | "timeout"> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    p,
    new Promise<"timeout">((r) => timer = setTimeout(() => r("timeout"), ms)),
  ]).finally(() => clearTimeout(timer));
}

Deno.test({
  name:
    "forward (quic): a reader that does not read holds the writer back (bounded memory), then gets every byte",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const server = await quicForwardServer();
    const target = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const fwd = startForward(
      server.openStream,
      `0:127.0.0.1:${(target.addr as Deno.NetAddr).port}`,
    );
    try {
      const client = await Deno.connect({ hostname: "127.0.0.1", port: fwd.addr.port });
      const sink = await target.accept(); // and then reads nothing for a while
      const rss0 = Deno.memoryUsage().rss;
      const chunk = pattern(7, 1 << 20);
      const limit = 512 << 20;
      let written = 0;
      let pending: Promise<number> | undefined;
      // Write as fast as the forward takes it for a bounded window. Unbounded buffering
      // anywhere on the path would let hundreds of MiB through; backpressure stops it
      // at the socket buffers, one read in flight and QUIC's flow-control window.
      const windowEnds = Date.now() + 2_000;
      while (written < limit && Date.now() < windowEnds) {
        pending = client.write(chunk.subarray(written % chunk.length));
        const r = await within(pending, windowEnds - Date.now());
        if (r === "timeout") break;
        written += r;
        pending = undefined;
      }
      const held = written;
      const grown = (Deno.memoryUsage().rss - rss0) / 2 ** 20;
      assert.ok(
        held < 64 << 20,
        `the writer got ${held >> 20} MiB past a reader that reads nothing`,
      );
      assert.ok(grown < 96, `RSS grew by ${grown.toFixed(0)} MiB`);
      // Now read: everything written arrives, in order, and the writer is released.
      const reading = (async () => {
        const buf = new Uint8Array(1 << 20);
        let n = 0;
        let bad = -1;
        while (true) {
          const k = await sink.read(buf);
          if (k === null) return { n, bad };
          for (let i = 0; i < k; i++) {
            if (bad < 0 && buf[i] !== chunk[(n + i) % chunk.length]) bad = n + i;
          }
          n += k;
        }
      })();
      if (pending) written += await pending;
      // Whatever that write left unwritten is written now, so the stream is whole chunks.
      while (written % chunk.length) {
        written += await client.write(chunk.subarray(written % chunk.length));
      }
      await client.closeWrite();
      const got = await reading;
      assert.equal(got.bad, -1, `byte ${got.bad} differs`);
      assert.equal(got.n, written);
      assert.ok(written > held, "the writer moves again once the reader reads");
      client.close();
      sink.close();
    } finally {
      await fwd.close();
      target.close();
      await server.close();
    }
  },
});

Deno.test({
  name:
    "forward (quic): close() resets open connections on both ends (the vault's side sees its socket end)",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const server = await quicForwardServer();
    const target = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const fwd = startForward(
      server.openStream,
      `0:127.0.0.1:${(target.addr as Deno.NetAddr).port}`,
    );
    try {
      const client = await Deno.connect({ hostname: "127.0.0.1", port: fwd.addr.port });
      const far = await target.accept();
      await client.write(new TextEncoder().encode("x"));
      const one = new Uint8Array(16);
      assert.equal(await far.read(one), 1);
      assert.equal(fwd.active, 1);
      await fwd.close();
      // Both sockets end (EOF or reset), without waiting for any timeout of ours.
      const ended = (c: Deno.TcpConn) => c.read(new Uint8Array(16)).then((n) => n, () => null);
      assert.equal(await within(ended(client), 5_000), null);
      assert.equal(await within(ended(far), 5_000), null);
      assert.equal(fwd.active, 0);
      client.close();
      far.close();
    } finally {
      await fwd.close();
      target.close();
      await server.close();
    }
  },
});
