/**
 * The console's local escapes in a real PTY, against a real init: `~#` lists
 * forwards, `~C` then `-L …` adds one that carries a connection, `~^Z`
 * suspends the client (the outer shell's job control sees it stopped) and
 * `fg` brings the console back in raw mode.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { tcpByteStream } from "../src/forward/mod.ts";
import { ROOT, startSim, vaultFor } from "./harness.ts";
import { outerTerminal } from "./console_term.ts";

const PROMPT = /root@vault:[^\r\n]*[#$] $/;

Deno.test({
  name:
    "console escapes: ~# lists forwards, ~C -L adds one that works, ~^Z suspends and fg resumes",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const sim = await startSim();
    const target = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const tport = (target.addr as Deno.NetAddr).port;
    const serving = (async () => {
      const s = tcpByteStream(await target.accept());
      const got = new TextDecoder().decode(await new Response(s.readable).arrayBuffer());
      const w = s.writable.getWriter();
      await w.write(new TextEncoder().encode(`echo:${got}`));
      await w.close();
    })();
    serving.catch(() => {});
    const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const lport = (probe.addr as Deno.NetAddr).port;
    probe.close();
    const m = await sim.startMachine("m0701");
    await sim.writeConfig({ demo: vaultFor(sim, m) });
    const t = outerTerminal({ FLY_VAULT_CONFIG_DIR: sim.configDir });
    const cli = `${Deno.execPath()} run -A --quiet ${join(ROOT, "bin", "fly-vault.ts")}`;
    try {
      await t.waitFor(/outer\$ $/);
      t.type(`${cli} connect demo\r`);
      await t.waitFor(PROMPT, 60_000);

      t.type("\r");
      await t.waitFor(PROMPT);
      t.type("~#");
      await t.waitFor(/No forwarded ports/);

      t.type("~C");
      await t.waitFor(/fly-vault> $/);
      t.type(`-L ${lport}:127.0.0.1:${tport}\r`);
      await t.waitFor(new RegExp(`Forwarding ${lport}:127\\.0\\.0\\.1:${tport}`));
      t.type("~#");
      await t.waitFor(
        new RegExp(
          `-L 127\\.0\\.0\\.1:${lport}:127\\.0\\.0\\.1:${tport} \\(listening on 127\\.0\\.0\\.1:${lport}`,
        ),
      );
      const s = tcpByteStream(await Deno.connect({ hostname: "127.0.0.1", port: lport }));
      const w = s.writable.getWriter();
      await w.write(new TextEncoder().encode("ping"));
      await w.close();
      assert.equal(
        new TextDecoder().decode(await new Response(s.readable).arrayBuffer()),
        "echo:ping",
      );
      await serving;

      // A bad command says so and leaves the console working.
      t.type("~C");
      await t.waitFor(/fly-vault> $/);
      t.type("-X\r");
      await t.waitFor(/unknown command: -X/);

      t.type("~\x1a");
      await t.waitFor(/Stopped/);
      await t.waitFor(/outer\$ $/);
      // The outer shell has the terminal back in cooked mode: it echoes and runs a line.
      t.type("echo outer-$((6*7))\r");
      await t.waitFor(/outer-42/);
      t.type("fg\r");
      t.type("echo resumed-$((2*3))\r");
      await t.waitFor(/resumed-6/);
      await t.waitFor(PROMPT);

      t.type("exit\r");
      await t.waitFor(/outer\$ $/);
    } finally {
      t.pty.kill("SIGKILL");
      target.close();
      await sim.close();
    }
  },
});
