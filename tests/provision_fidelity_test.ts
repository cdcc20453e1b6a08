/**
 * Fidelity: a real Debian minbase rootfs, uploaded by the client's
 * `uploadRootfs` into init's `serveUpload` (over an in-memory stream pair
 * until the QUIC transport is wired), must equal GNU tar's own extraction
 * of the same tarball everywhere outside /dev; then a program from it runs
 * chrooted with the mounts in place.
 */
import assert from "node:assert/strict";
import { Writable } from "node:stream";
import { uploadRootfs } from "../src/client/provision.ts";
import { FrameReader, FrameWriter } from "../src/protocol/mod.ts";
import { openRootfsStore, removeTree, serveUpload, tarExtractArgs } from "../src/rootfs/mod.ts";
import { diffManifests, manifest, sh } from "../src/rootfs/testutil.ts";
import { ensureMinbase } from "./provision_fixture.ts";

function pipePair() {
  const up = new TransformStream<Uint8Array, Uint8Array>();
  const down = new TransformStream<Uint8Array, Uint8Array>();
  return {
    server: { readable: up.readable, writable: down.writable },
    client: { readable: down.readable, writable: up.writable },
  };
}

Deno.test("fidelity: Debian minbase through fly-vault equals GNU tar's extraction outside /dev", async () => {
  const tarball = await ensureMinbase();
  const work = await Deno.makeTempDir({ prefix: "fv-fidelity-" });
  try {
    const ref = `${work}/ref`;
    await Deno.mkdir(ref);
    const gnu = new Deno.Command("tar", {
      args: [...tarExtractArgs(ref).map((a) => (a === "-" ? tarball : a)), "-z"],
    });
    assert.ok((await gnu.output()).success, "GNU tar reference extraction");

    const store = await openRootfsStore(`${work}/data`);
    const { server, client } = pipePair();
    const served = serveUpload(new FrameReader(server.readable), new FrameWriter(server.writable), {
      store,
    });
    const lines: string[] = [];
    const out = new Writable({
      write(chunk, _enc, cb) {
        lines.push(...String(chunk).split("\n").filter(Boolean));
        cb();
      },
    });
    const done = await uploadRootfs(() => Promise.resolve(client), tarball, {
      json: true,
      tty: false,
      out,
    });
    await served;
    assert.equal(store.state().state, "ready");
    assert.equal(store.state().sha256, done.sha256);
    const events = lines.map((l) => JSON.parse(l).event);
    assert.ok(events.includes("upload") && events.at(-1) === "done", events.join());
    assert.ok(done.notes?.some((n) => /char device/.test(n)), "device nodes under /dev noted");

    const outsideDev = (p: string) => p === "dev" || p.startsWith("dev/");
    const theirs = await manifest(ref, { exclude: outsideDev });
    const ours = await manifest(store.rootfsDir, { exclude: outsideDev });
    assert.deepEqual(diffManifests(theirs, ours), []);
    assert.ok(theirs.size > 5000, `compared ${theirs.size} paths`);
    // The things that are easiest to lose, checked by name:
    assert.match(ours.get("usr/bin/su")!, /mode=4755 .*uid=0 gid=0/);
    assert.match(
      ours.get("usr/local/bin/fly-vault-captest")!,
      /xattr:security.capability=0x0100000200200000/,
    );
    assert.match(ours.get("etc/hostname")!, /xattr:user.fly-vault=/);
    assert.ok([...ours.values()].some((v) => / -> \/etc\/alternatives\//.test(v)));
    assert.ok([...ours.values()].some((v) => /links=\[/.test(v)), "hardlinks kept");

    await store.prepareMounts();
    try {
      const apt = await sh("chroot", [store.rootfsDir, "apt-get", "--version"]);
      assert.match(apt, /^apt \d/);
    } finally {
      await store.releaseMounts();
    }
  } finally {
    await removeTree(work);
  }
});
