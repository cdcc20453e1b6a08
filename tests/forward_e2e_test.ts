/**
 * Forwards and `pipe` end to end: the real `fly-vault forward` and
 * `fly-vault pipe` against a real fly-vault-init over QUIC.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { tcpByteStream } from "../src/forward/mod.ts";
import { ROOT, startSim, vaultFor } from "./harness.ts";
import { run, startSshd } from "./sshd.ts";

const CLI = join(ROOT, "bin", "fly-vault.ts");

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

async function readAll(r: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  return new Uint8Array(await new Response(r).arrayBuffer());
}

Deno.test({
  name:
    "forward e2e: `fly-vault forward` carries bytes both ways with half-close; a refused port is reported",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const sim = await startSim();
    const target = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const targetPort = (target.addr as Deno.NetAddr).port;
    // Reads to EOF, then answers with the byte count and a checksum-ish tail.
    const serving = (async () => {
      for await (const c of target) {
        const s = tcpByteStream(c);
        (async () => {
          const got = await readAll(s.readable);
          const w = s.writable.getWriter();
          await w.write(new TextEncoder().encode(`${got.length}:${got[got.length - 1]}`));
          await w.close();
        })().catch(() => {});
      }
    })().catch(() => {});
    const deadPort = freePort();
    const lport = freePort();
    const lport2 = freePort();
    let child: Deno.ChildProcess | undefined;
    try {
      const m = await sim.startMachine("m0501");
      await sim.writeConfig({ demo: vaultFor(sim, m) });
      child = new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          "--quiet",
          CLI,
          "forward",
          "demo",
          `${lport}:127.0.0.1:${targetPort}`,
          `127.0.0.1:${lport2}:localhost:${deadPort}`,
        ],
        env: { FLY_VAULT_CONFIG_DIR: sim.configDir, NO_COLOR: "1" },
        stdin: "null",
        stdout: "null",
        stderr: "piped",
      }).spawn();
      const stderr = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
      let log = "";
      const waitLog = async (re: RegExp) => {
        while (!re.test(log)) {
          const { value, done } = await stderr.read();
          if (done) throw new Error(`forward exited: ${log}`);
          log += value;
        }
      };
      await waitLog(/forwarding/);

      const data = new Uint8Array(3 * 1024 * 1024).map((_, i) => i * 7);
      const s = tcpByteStream(await Deno.connect({ hostname: "127.0.0.1", port: lport }));
      const w = s.writable.getWriter();
      await w.write(data);
      await w.close();
      assert.equal(
        new TextDecoder().decode(await readAll(s.readable)),
        `${data.length}:${data[data.length - 1]}`,
      );

      const dead = tcpByteStream(await Deno.connect({ hostname: "127.0.0.1", port: lport2 }));
      assert.equal((await readAll(dead.readable).catch(() => new Uint8Array(0))).length, 0);
      await waitLog(
        new RegExp(`forward 127\\.0\\.0\\.1:${lport2} → localhost:${deadPort}: .*refused`, "i"),
      );

      // The good forward still works after the refused one.
      const again = tcpByteStream(await Deno.connect({ hostname: "127.0.0.1", port: lport }));
      const w2 = again.writable.getWriter();
      await w2.write(new Uint8Array([1, 2, 3]));
      await w2.close();
      assert.equal(new TextDecoder().decode(await readAll(again.readable)), "3:3");
    } finally {
      child?.kill("SIGINT");
      await child?.status;
      target.close();
      await serving;
      await sim.close();
    }
  },
});

Deno.test({
  name: "pipe e2e: ssh through `fly-vault pipe` as ProxyCommand",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const sim = await startSim();
    const sshd = await startSshd();
    try {
      const m = await sim.startMachine("m0502");
      await sim.writeConfig({ demo: vaultFor(sim, m) });
      const proxy =
        `env FLY_VAULT_CONFIG_DIR=${sim.configDir} ${Deno.execPath()} run -A --quiet ${CLI} pipe demo 127.0.0.1:${sshd.port}`;
      const out = await run("ssh", [
        ...sshd.options,
        "-o",
        `ProxyCommand=${proxy}`,
        "root@demo",
        "echo through-the-vault; head -c 2000000 /dev/zero | wc -c",
      ]);
      assert.equal(out.code, 0, out.err);
      assert.equal(out.out, "through-the-vault\n2000000\n");
    } finally {
      await sshd.stop();
      await sim.close();
    }
  },
});
