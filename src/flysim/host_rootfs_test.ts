import assert from "node:assert/strict";
import { buildHostRootfs } from "./host_rootfs.ts";

async function inRootfs(root: string, env: Record<string, string>, script: string) {
  const out = await new Deno.Command("chroot", {
    args: [root, "/usr/bin/env", "-i", ...Object.entries(env).map(([k, v]) => `${k}=${v}`)]
      .concat(["PATH=/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin", "/bin/bash", "-c", script]),
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = (b: Uint8Array) => new TextDecoder().decode(b);
  return { code: out.code, out: text(out.stdout), err: text(out.stderr) };
}

Deno.test("host rootfs: terminfo for the builder's TERM and the usual terminals; a bounded size", async () => {
  const root = await Deno.makeTempDir({ prefix: "fv-host-rootfs-" });
  const term = Deno.env.get("TERM");
  // wy50 is only in ncurses-term's /usr/share/terminfo: there because it is the builder's TERM.
  Deno.env.set("TERM", "wy50");
  try {
    await buildHostRootfs(root);
    for (
      const t of ["x/xterm-256color", "x/xterm", "t/tmux-256color", "s/screen-256color", "v/vt100"]
        .concat(["l/linux", "d/dumb", "w/wy50"])
    ) {
      const found = await Deno.stat(`${root}/usr/lib/terminfo/${t}`).catch(() =>
        Deno.stat(`${root}/usr/share/terminfo/${t}`)
      ).then(() => true, () => false);
      assert.ok(found, `terminfo ${t}`);
    }
    // The login profile keeps a TERM the rootfs knows and replaces one it does not.
    const known = await inRootfs(root, { TERM: "wy50" }, ". /etc/profile; echo $TERM");
    assert.equal(known.out, "wy50\n", known.err);
    const unknown = await inRootfs(root, { TERM: "fv-nope" }, ". /etc/profile; echo $TERM");
    assert.equal(unknown.out, "xterm-256color\n", unknown.err);
    // sshd's helper is executable; /etc/shadow is not world-readable.
    assert.ok((await Deno.stat(`${root}/usr/local/sbin/vault-sshd`)).mode! & 0o100);
    assert.equal((await Deno.stat(`${root}/etc/shadow`)).mode! & 0o007, 0);
    // Python's standard library without its test suite.
    const py = await inRootfs(root, {}, "python3 -c 'import json, sqlite3, ssl, http.server'");
    assert.equal(py.code, 0, py.err);
    const lib = await inRootfs(
      root,
      {},
      "ls /usr/lib/python3.*/os.py && ! ls -d /usr/lib/python3.*/test",
    );
    assert.equal(lib.code, 0, lib.out + lib.err);
    // Small enough to upload on a first `npm start` and to copy per test machine.
    const du = await new Deno.Command("du", { args: ["-sb", root], stdout: "piped" }).output();
    const bytes = Number(new TextDecoder().decode(du.stdout).split("\t")[0]);
    assert.ok(bytes < 80e6, `host rootfs is ${(bytes / 1e6).toFixed(1)} MB`);
  } finally {
    if (term === undefined) Deno.env.delete("TERM");
    else Deno.env.set("TERM", term);
    await Deno.remove(root, { recursive: true });
  }
});
