/**
 * Port forwards end to end over loopback streams: many concurrent
 * connections carrying 10 MiB each, half-close, a refused remote failing
 * only its own connection, and a local port in use as a clear error.
 */
import assert from "node:assert/strict";
import { isVaultError } from "../src/errors/mod.ts";
import { serveForward, startForward, tcpByteStream } from "../src/forward/mod.ts";
import { StreamTag } from "../src/protocol/mod.ts";
import { startLoopbackServer } from "./console_loopback.ts";

function forwardServer() {
  return startLoopbackServer((tag, reader, writer) =>
    tag === StreamTag.forward ? serveForward(reader, writer) : Promise.resolve()
  );
}

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

Deno.test({
  name: "forward: 20 concurrent connections × 10 MiB echo byte-for-byte",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const server = forwardServer();
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

Deno.test({
  name: "forward: half-close — the server reads to EOF, then answers",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const server = forwardServer();
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

Deno.test({
  name: "forward: a refused remote fails that connection only; the listener keeps going",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const server = forwardServer();
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
      assert.match(errors[0], new RegExp(`127\\.0\\.0\\.1:${deadPort}.*(refused|Connection)`, "i"));
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
