/**
 * The console end to end: the real `fly-vault connect` in a real PTY,
 * against a real fly-vault-init over QUIC (flysim attestation, pin, auth).
 * The client's network path is cut mid-session: the client notices, shows a
 * status line, reconnects by itself and re-attaches with the shell state
 * intact. A new client process re-attaches by default; `sessions` lists it.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { ROOT, startSim, vaultFor } from "./harness.ts";
import { outerTerminal } from "./console_term.ts";
import { startUdpRelay } from "./console_udp_relay.ts";

const PROMPT = /root@vault:[^\r\n]*[#$] $/;

Deno.test({
  name: "console e2e: type, resize, reconnect after the path is cut, re-attach from a new process",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const sim = await startSim();
    const m = await sim.startMachine("m0401");
    const [hostname, port] = [m.address.replace(/:\d+$/, ""), Number(m.address.split(":").pop())];
    const relay = startUdpRelay({ hostname, port });
    await sim.writeConfig({ demo: { ...vaultFor(sim, m), address: relay.address } });
    const t = outerTerminal({ FLY_VAULT_CONFIG_DIR: sim.configDir });
    const cli = `${Deno.execPath()} run -A --quiet ${join(ROOT, "bin", "fly-vault.ts")}`;
    try {
      await t.waitFor(/outer\$ $/);
      t.type(`${cli} connect demo\r`);
      await t.waitFor(PROMPT, 60_000);
      t.type("V=kept; echo set-$V\r");
      await t.waitFor(/set-kept/);
      await t.waitFor(PROMPT);

      let size = "";
      t.pty.resize(111, 37);
      for (let i = 0; i < 20 && !size.includes("37 111"); i++) {
        t.type("stty size\r");
        size = await t.waitFor(/\d+ \d+\r\n[\s\S]*vault:[^\r\n]*[#$] $/);
      }
      assert.match(size, /37 111/);

      // The network path dies silently; the console's heartbeat finds out, and a spare
      // connection (a new source port, so a new flow) takes over.
      const flowsBefore = relay.flows;
      relay.cut();
      await t.waitFor(/no reply from demo/, 60_000);
      await t.waitFor(/reconnected to session/, 60_000);
      assert.ok(relay.flows > flowsBefore, "the reconnect used a new path");
      t.type("echo back-$V\r");
      await t.waitFor(/back-kept/);
      await t.waitFor(PROMPT);

      t.type("\r~.");
      await t.waitFor(/outer\$ $/);
      t.type(`${cli} sessions demo\r`);
      const list = await t.waitFor(/outer\$ $/);
      assert.match(list, /ID +CREATED +ATTACHED +COMMAND +IDLE/);
      assert.match(list, /[0-9a-f]{8} +\d{4}-\d\d-\d\d \d\d:\d\d:\d\d +no +\/bin\/bash -l +\d+s/);

      // A new client process re-attaches by default and repaints earlier output.
      t.type(`${cli} connect demo\r`);
      await t.waitFor(/back-kept[\s\S]*vault:[^\r\n]*[#$] $/, 60_000);
      t.type("echo again-$V; exit 5\r");
      await t.waitFor(/again-kept/);
      await t.waitFor(/outer\$ $/);
      t.type("echo status-$?\r");
      await t.waitFor(/status-5/);
    } finally {
      t.pty.kill("SIGKILL");
      relay.close();
      await sim.close();
    }
  },
});

Deno.test({
  name: "exec -t e2e: an interactive command on a remote PTY through the real CLI; modes restored",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const sim = await startSim();
    const m = await sim.startMachine("m0402");
    await sim.writeConfig({ demo: vaultFor(sim, m) });
    const t = outerTerminal({ FLY_VAULT_CONFIG_DIR: sim.configDir });
    const cli = `${Deno.execPath()} run -A --quiet ${join(ROOT, "bin", "fly-vault.ts")}`;
    const modes = join(sim.dir, "modes");
    try {
      await t.waitFor(/outer\$ $/);
      t.pty.resize(97, 29);
      t.type(
        `stty -g > ${modes}.before; ${cli} exec -t --argv demo -- sh -c 'stty size; read x; echo got-$x; exit 3'; echo status-$?\r`,
      );
      await t.waitFor(/29 97\r\n/, 60_000);
      t.type("hello\r");
      await t.waitFor(/got-hello/);
      await t.waitFor(/status-3/);
      await t.waitFor(/outer\$ $/);
      t.type(`stty -g > ${modes}.after; cmp ${modes}.before ${modes}.after && echo MODES-SAME\r`);
      await t.waitFor(/[\r\n]MODES-SAME/);
    } finally {
      t.pty.kill("SIGKILL");
      await sim.close();
    }
  },
});
