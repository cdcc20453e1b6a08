/**
 * `pipe` as ssh's ProxyCommand: an OpenSSH session to an sshd on loopback,
 * carried through the forward stream (what VS Code Remote-SSH, rsync and git
 * over ssh rely on).
 */
import assert from "node:assert/strict";
import { serveForward } from "../src/forward/mod.ts";
import { StreamTag } from "../src/protocol/mod.ts";
import { startLoopbackServer } from "./console_loopback.ts";
import { run, startSshd } from "./sshd.ts";

const FIXTURE = new URL("./forward_pipe_fixture.ts", import.meta.url).pathname;

Deno.test({
  name: "pipe: an OpenSSH session through a ProxyCommand",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const sshd = await startSshd();
    const server = startLoopbackServer((tag, reader, writer) =>
      tag === StreamTag.forward ? serveForward(reader, writer) : Promise.resolve()
    );
    try {
      const proxy =
        `${Deno.execPath()} run -A --quiet ${FIXTURE} ${server.port} 127.0.0.1:${sshd.port}`;
      const ssh = (remote: string) =>
        run("ssh", [
          ...sshd.options,
          "-o",
          `ProxyCommand=${proxy}`,
          "root@myvault",
          remote,
        ]);
      const hello = await ssh("echo hello-through-pipe; id -u");
      assert.equal(hello.code, 0, hello.err);
      assert.equal(hello.out, "hello-through-pipe\n0\n");
      // A bulk transfer, as rsync or git would make.
      const bulk = await ssh("head -c 5000000 /dev/urandom | sha256sum; echo done");
      assert.equal(bulk.code, 0, bulk.err);
      assert.match(bulk.out, /^[0-9a-f]{64} {2}-\ndone\n$/);
      const big = await ssh("head -c 8000000 /dev/zero");
      assert.equal(big.stdout.length, 8_000_000);
      // A target that refuses is an error the user can read, and ssh fails cleanly.
      const refused = await run(Deno.execPath(), [
        "run",
        "-A",
        "--quiet",
        FIXTURE,
        String(server.port),
        "127.0.0.1:1",
      ]);
      assert.equal(refused.code, 1);
      assert.match(refused.err, /error\[forward\.refused\]/);
    } finally {
      await server.close();
      await sshd.stop();
    }
  },
});
