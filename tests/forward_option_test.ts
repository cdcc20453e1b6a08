/**
 * `fly-vault forward VAULT -L LPORT:HOST:RPORT`, as `connect -L` and ssh -L
 * take it: the real client against a real init.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { tcpByteStream } from "../src/forward/mod.ts";
import { ROOT, startSim, vaultFor } from "./harness.ts";

const CLI = join(ROOT, "bin", "fly-vault.ts");

Deno.test("forward -L LPORT:HOST:RPORT carries a connection into the vault", async () => {
  const sim = await startSim();
  const target = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const targetPort = (target.addr as Deno.NetAddr).port;
  const serving = (async () => {
    const conn = await target.accept();
    const s = tcpByteStream(conn);
    const got = new TextDecoder().decode(await new Response(s.readable).arrayBuffer());
    const w = s.writable.getWriter();
    await w.write(new TextEncoder().encode(`echo:${got}`));
    await w.close();
  })();
  serving.catch(() => {}); // awaited in the test; a failure before that must not go uncaught
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const lport = (probe.addr as Deno.NetAddr).port;
  probe.close();
  let child: Deno.ChildProcess | undefined;
  try {
    const m = await sim.startMachine("m0601");
    await sim.writeConfig({ demo: vaultFor(sim, m) });
    child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "--quiet",
        CLI,
        "forward",
        "demo",
        "-L",
        `${lport}:127.0.0.1:${targetPort}`,
      ],
      env: { FLY_VAULT_CONFIG_DIR: sim.configDir, NO_COLOR: "1" },
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const stderr = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
    let log = "";
    while (!/forwarding/.test(log)) {
      const { value, done } = await stderr.read();
      if (done) throw new Error(`forward exited: ${log}`);
      log += value;
    }
    assert.match(log, new RegExp(`forwarding ${lport}:127\\.0\\.0\\.1:${targetPort}`));
    const s = tcpByteStream(await Deno.connect({ hostname: "127.0.0.1", port: lport }));
    const w = s.writable.getWriter();
    await w.write(new TextEncoder().encode("ping"));
    await w.close();
    assert.equal(
      new TextDecoder().decode(await new Response(s.readable).arrayBuffer()),
      "echo:ping",
    );
    await serving;
    child.kill("SIGINT");
    assert.equal((await child.status).code, 0);
    stderr.cancel().catch(() => {});
  } finally {
    try {
      child?.kill("SIGKILL");
    } catch { /* already gone */ }
    await child?.status;
    target.close();
    await sim.close();
  }
});
