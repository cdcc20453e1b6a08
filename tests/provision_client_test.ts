/**
 * The client's upload against init's upload handler (in-memory stream pair):
 * output in each style (JSON events, plain lines, terminal bar), a refused
 * tarball reported with the server's code, and a connection cut mid-upload
 * leaving the vault as it was.
 */
import assert from "node:assert/strict";
import { Writable } from "node:stream";
import { uploadRootfs } from "../src/client/provision.ts";
import { type ByteStream, FrameReader, FrameWriter } from "../src/protocol/mod.ts";
import { openRootfsStore, removeTree, type RootfsStore, serveUpload } from "../src/rootfs/mod.ts";
import { craft, gz, sh, tarOf } from "../src/rootfs/testutil.ts";

function pipePair() {
  const up = new TransformStream<Uint8Array, Uint8Array>();
  const down = new TransformStream<Uint8Array, Uint8Array>();
  return {
    server: { readable: up.readable, writable: down.writable },
    client: { readable: down.readable, writable: up.writable },
  };
}

function collector(tty = false) {
  let text = "";
  const out = new Writable({
    write(chunk, _enc, cb) {
      text += String(chunk);
      cb();
    },
  }) as Writable & { isTTY?: boolean; columns?: number };
  if (tty) {
    out.isTTY = true;
    out.columns = 100;
  }
  return { out, text: () => text };
}

async function withVault(fn: (store: RootfsStore, work: string) => Promise<void>) {
  const work = await Deno.makeTempDir({ prefix: "fv-client-" });
  try {
    await fn(await openRootfsStore(`${work}/data`), work);
  } finally {
    await removeTree(work);
  }
}

async function smallImage(work: string, blob = 0): Promise<string> {
  const dir = `${work}/img`;
  await Deno.mkdir(`${dir}/etc`, { recursive: true });
  await Deno.writeTextFile(`${dir}/etc/os-release`, "ID=test\n");
  for (let i = 0; i < blob; i++) {
    await Deno.writeFile(`${dir}/etc/blob${i}`, crypto.getRandomValues(new Uint8Array(65536)));
  }
  await sh("tar", ["--numeric-owner", "-czf", `${work}/img.tar.gz`, "-C", dir, "."]);
  return `${work}/img.tar.gz`;
}

/** Serves one upload on a fresh pair; returns the client end and the server's completion. */
function serve(store: RootfsStore) {
  const { server, client } = pipePair();
  const served = serveUpload(new FrameReader(server.readable), new FrameWriter(server.writable), {
    store,
    progressIntervalMs: 0,
  });
  return { client, served };
}

Deno.test("upload: --json prints one event object per line, ending with done", async () => {
  await withVault(async (store, work) => {
    const tarball = await smallImage(work);
    const { client, served } = serve(store);
    const c = collector();
    const done = await uploadRootfs(() => Promise.resolve(client), tarball, {
      json: true,
      tty: false,
      out: c.out,
    });
    await served;
    const events = c.text().trim().split("\n").map((l) => JSON.parse(l));
    assert.equal(events[0].event, "hash");
    assert.ok(events.some((e) => e.event === "hash" && e.sha256 === done.sha256));
    assert.ok(events.some((e) => e.event === "upload" && typeof e.rate === "number"));
    assert.ok(events.some((e) => e.event === "progress" && e.phase === "swap"));
    assert.deepEqual(events.at(-1).event, "done");
  });
});

Deno.test("upload: plain output is one line per step, no carriage returns", async () => {
  await withVault(async (store, work) => {
    const tarball = await smallImage(work, 20);
    const { client, served } = serve(store);
    const c = collector();
    await uploadRootfs(() => Promise.resolve(client), tarball, {
      json: false,
      tty: false,
      out: c.out,
    });
    await served;
    const text = c.text();
    assert.ok(!text.includes("\r"), text);
    const lines = text.trim().split("\n");
    assert.match(lines[0], /^hashing /);
    assert.match(lines[1], /^sha256 [0-9a-f]{64}/);
    assert.ok(lines.some((l) => l.startsWith("uploading ")));
    assert.ok(lines.some((l) => l.startsWith("uploaded ")));
    assert.ok(lines.some((l) => l.startsWith("swap")));
    assert.ok(lines.some((l) => /^provisioned: \d+ entries/.test(l)), text);
    assert.equal(lines.at(-1), "note: seeded persistent /root and /home from the image");
    assert.equal(new Set(lines).size, lines.length, `no step repeated:\n${text}`);
  });
});

Deno.test("upload: on a terminal a bar shows bytes, rate and ETA", async () => {
  await withVault(async (store, work) => {
    const tarball = await smallImage(work, 20);
    const { client, served } = serve(store);
    const c = collector(true);
    await uploadRootfs(() => Promise.resolve(client), tarball, {
      json: false,
      tty: true,
      out: c.out,
    });
    await served;
    assert.match(c.text(), /upload +\[.*\] \d+% [\d.]+\/[\d.]+ MiB [\d.]+ MiB\/s ETA/);
    assert.match(c.text(), /provisioned: \d+ entries/);
  });
});

Deno.test("upload: a refused tarball comes back as the server's error code", async () => {
  await withVault(async (store, work) => {
    await Deno.writeFile(`${work}/evil.tar.gz`, gz(tarOf(craft({ name: "../evil" }))));
    const { client, served } = serve(store);
    const c = collector();
    await assert.rejects(
      uploadRootfs(() => Promise.resolve(client), `${work}/evil.tar.gz`, {
        json: true,
        tty: false,
        out: c.out,
      }),
      { code: "rootfs.dotdot" },
    );
    await served;
    const last = JSON.parse(c.text().trim().split("\n").at(-1)!);
    assert.equal(last.event, "error");
    assert.equal(last.code, "rootfs.dotdot");
    assert.equal(store.state().state, "failed");
  });
});

Deno.test("upload: a connection cut mid-upload leaves the vault as before; the next one works", async () => {
  await withVault(async (store, work) => {
    const tarball = await smallImage(work, 64);
    const { client, served } = serve(store);
    // A client stream that dies after 1 MiB, as a dropped connection does.
    let sent = 0;
    const cut = new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, ctl) {
        sent += chunk.length;
        if (sent > 1 << 20) ctl.error(new Error("connection lost"));
        else ctl.enqueue(chunk);
      },
    });
    cut.readable.pipeTo(client.writable).catch(() => {});
    const dropping: ByteStream = { readable: client.readable, writable: cut.writable };
    await assert.rejects(
      uploadRootfs(() => Promise.resolve(dropping), tarball, {
        json: true,
        tty: false,
        out: collector().out,
      }),
    );
    await served;
    assert.equal(store.state().state, "unprovisioned");
    assert.equal(store.state().last_error?.code, "rootfs.source_failed");
    const again = serve(store);
    await uploadRootfs(() => Promise.resolve(again.client), tarball, {
      json: true,
      tty: false,
      out: collector().out,
    });
    await again.served;
    assert.equal(store.state().state, "ready");
  });
});
