/**
 * `fly-vault cp` end to end: the real CLI against a real fly-vault-init over
 * QUIC. A tree with a symlink, an executable and a 50 MiB file goes up and
 * comes back byte-identical with modes and mtimes; errors are clear.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { startSim, vaultFor } from "./harness.ts";

async function digest(path: string): Promise<string> {
  const bytes = await Deno.readFile(path);
  return Array.from(new Uint8Array(await crypto.subtle.digest("SHA-256", bytes)))
    .map((b) => b.toString(16).padStart(2, "0")).join("");
}

Deno.test({
  name: "cp e2e: a tree up and back through the real CLI, identical; missing source is clear",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const sim = await startSim();
    const local = await Deno.makeTempDir({ prefix: "fv-cp-e2e-" });
    try {
      const m = await sim.startMachine("m0601");
      await sim.writeConfig({ demo: vaultFor(sim, m) });
      const src = join(local, "tree");
      await Deno.mkdir(join(src, "bin"), { recursive: true });
      await Deno.writeTextFile(join(src, "bin", "tool"), "#!/bin/sh\necho tool\n");
      await Deno.chmod(join(src, "bin", "tool"), 0o750);
      await Deno.symlink("bin/tool", join(src, "tool-link"));
      const big = new Uint8Array(50 * 1024 * 1024);
      for (let o = 0; o < big.length; o += 65536) {
        crypto.getRandomValues(big.subarray(o, o + 65536));
      }
      await Deno.writeFile(join(src, "big.bin"), big);
      const when = new Date("2021-03-04T05:06:07Z");
      await Deno.utime(join(src, "big.bin"), when, when);

      const up = await sim.client(["cp", "-r", src, "demo:/root/tree"]);
      assert.equal(up.code, 0, up.stderr);
      // Seen from inside the vault: the link is a link, the mode is kept.
      const seen = await sim.client([
        "exec",
        "--argv",
        "-n",
        "demo",
        "--",
        "sh",
        "-c",
        "readlink /root/tree/tool-link; stat -c %a /root/tree/bin/tool; sha256sum < /root/tree/big.bin",
      ]);
      assert.equal(seen.stdout, `bin/tool\n750\n${await digest(join(src, "big.bin"))}  -\n`);
      // The remote copy is usable inside the vault.
      const ran = await sim.client(["exec", "-n", "demo", "--", "/root/tree/tool-link"]);
      assert.equal(ran.stdout, "tool\n");

      const down = await sim.client(["cp", "-r", "demo:/root/tree", join(local, "back")]);
      assert.equal(down.code, 0, down.stderr);
      const back = join(local, "back");
      assert.equal(await digest(join(back, "big.bin")), await digest(join(src, "big.bin")));
      assert.equal((await Deno.stat(join(back, "big.bin"))).mtime!.getTime(), when.getTime());
      assert.equal((await Deno.stat(join(back, "bin", "tool"))).mode! & 0o777, 0o750);
      assert.equal(await Deno.readLink(join(back, "tool-link")), "bin/tool");

      const missing = await sim.client(["cp", "demo:/root/nope", local]);
      assert.equal(missing.code, 255);
      assert.match(missing.stderr, /error\[copy\.no_source\]: \/root\/nope: no such file/);
    } finally {
      await Deno.remove(local, { recursive: true }).catch(() => {});
      await sim.close();
    }
  },
});
