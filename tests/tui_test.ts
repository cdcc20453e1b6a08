/**
 * Full-screen programs in the demo rootfs (src/flysim/host_rootfs.ts), as a
 * user meets them: the real `fly-vault` client in a real PTY, a real
 * `fly-vault-init` (flysim attestation, pin, auth), the console's login shell
 * chrooted in the rootfs the demo provisions. `clear`, `less`, `vi`, `top`
 * and `htop` draw (terminfo is there), the README's tools are on PATH, an
 * unknown TERM falls back to one the rootfs knows, and the README's
 * `ssh -o ProxyCommand='fly-vault pipe …'` reaches the vault's sshd.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { ROOT, type Sim, startSim, vaultFor } from "./harness.ts";
import { outerTerminal } from "./console_term.ts";

const PROMPT = /root@vault:[^\r\n]*# $/;
const CLI = `${Deno.execPath()} run -A --quiet ${join(ROOT, "bin", "fly-vault.ts")}`;
const esc = (s: string) => new RegExp(s.replace(/[[\]?()*+.\\^$|{}]/g, "\\$&"));

async function withDemoVault(fn: (sim: Sim) => Promise<void>) {
  const sim = await startSim();
  try {
    const m = await sim.startMachine("m0120");
    await sim.writeConfig({ demo: vaultFor(sim, m) });
    await fn(sim);
  } finally {
    await sim.close();
  }
}

Deno.test({
  name: "tui: clear, less, vi, htop and the README's tools work in the demo rootfs's console",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await withDemoVault(async (sim) => {
      const t = outerTerminal({ FLY_VAULT_CONFIG_DIR: sim.configDir, TERM: "xterm-256color" });
      try {
        await t.waitFor(/outer\$ $/);
        t.type(`${CLI} connect demo\r`);
        await t.waitFor(PROMPT, 60_000);

        // clear: exits 0 having sent xterm's clear sequence (was "terminals database is inaccessible").
        t.type("clear; echo cleared-$?\r");
        const cleared = await t.waitFor(/cleared-\d+/);
        assert.match(cleared, esc("\x1b[H\x1b[2J"));
        assert.match(cleared, /cleared-0$/);
        await t.waitFor(PROMPT);

        // less shows a file on the alternate screen and quits on q (was "not fully functional").
        t.type("seq -f 'row-%g' 1 5 > /tmp/rows.txt; less /tmp/rows.txt\r");
        const paged = await t.waitFor(/row-5/);
        assert.match(paged, esc("\x1b[?1049h"));
        t.type("q");
        const after = await t.waitFor(PROMPT);
        assert.doesNotMatch(paged + after, /not fully functional|WARNING: terminal/);

        // vi draws, edits, writes and quits (was E557 / E1187).
        t.type("vi /tmp/notes.txt\r");
        const drawn = await t.waitFor(/notes\.txt/);
        t.type("ihello from vi\x1b:wq\r");
        const closed = await t.waitFor(esc("\x1b[?1049l"));
        assert.match(drawn + closed, esc("\x1b[?1049h"));
        assert.doesNotMatch(drawn + closed, /E557|E1187|E437|defaults\.vim/);
        await t.waitFor(PROMPT);
        t.type("cat /tmp/notes.txt\r");
        await t.waitFor(/[\r\n]hello from vi\r\n/);
        await t.waitFor(PROMPT);

        // htop draws its meters and function keys, and quits on q.
        t.type("htop\r");
        await t.waitFor(/Load average/);
        await t.waitFor(/Quit/);
        t.type("q");
        await t.waitFor(PROMPT);
        t.type("echo htop-$?\r");
        await t.waitFor(/htop-0/);
        await t.waitFor(PROMPT);

        // The README's tools are on PATH; Python has its standard library.
        t.type("which python3 nc htop top ps vi less sshd vault-sshd | wc -l\r");
        await t.waitFor(/[\r\n]9\r\n/);
        await t.waitFor(PROMPT);
        t.type(
          "python3 -c 'import json, http.server, sqlite3, ssl; print(json.dumps({\"py\": 6*7}))'\r",
        );
        await t.waitFor(/\{"py": 42\}/);
        await t.waitFor(PROMPT);
        t.type("exit\r");
        await t.waitFor(/outer\$ $/);
      } finally {
        t.pty.kill("SIGKILL");
      }
    });
  },
});

Deno.test({
  name: "tui: exec -t runs top (batch and interactive); an unknown TERM falls back in the console",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await withDemoVault(async (sim) => {
      const t = outerTerminal({ FLY_VAULT_CONFIG_DIR: sim.configDir, TERM: "xterm-256color" });
      try {
        await t.waitFor(/outer\$ $/);
        // Was: nothing printed, exit 1.
        t.type(`${CLI} exec -t demo -- top -b -n1; echo top-batch-$?\r`);
        const table = await t.waitFor(/top-batch-\d+/, 60_000);
        assert.match(table, /top - .*load average/);
        assert.match(table, /PID +USER/);
        assert.match(table, /top-batch-0$/);
        await t.waitFor(/outer\$ $/);

        t.type(`${CLI} exec -t demo -- top -d 0.5\r`);
        await t.waitFor(/PID +USER/, 60_000);
        t.type("q");
        await t.waitFor(/outer\$ $/);
        t.type("echo top-$?\r");
        await t.waitFor(/top-0/);
        await t.waitFor(/outer\$ $/);

        // A terminal the rootfs has no terminfo for: the login shell picks xterm-256color.
        t.type(`TERM=fv-no-such-terminal ${CLI} connect demo\r`);
        await t.waitFor(PROMPT, 60_000);
        t.type("echo term-$TERM; clear; echo clear-$?\r");
        await t.waitFor(/term-xterm-256color/);
        await t.waitFor(/clear-0/);
        await t.waitFor(PROMPT);
        t.type("exit\r");
        await t.waitFor(/outer\$ $/);
      } finally {
        t.pty.kill("SIGKILL");
      }
    });
  },
});

/** Processes whose command line (argv joined by spaces, or sshd's retitled one) matches. */
async function processesMatching(re: RegExp): Promise<number[]> {
  const pids: number[] = [];
  for await (const e of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    const cmdline = await Deno.readTextFile(`/proc/${e.name}/cmdline`).catch(() => "");
    if (re.test(cmdline.replaceAll("\0", " ").trim())) pids.push(Number(e.name));
  }
  return pids;
}

Deno.test({
  name: "tui: the README's ssh through `fly-vault pipe` reaches the vault's sshd (vault-sshd)",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = String((probe.addr as Deno.NetAddr).port);
    probe.close();
    try {
      await withDemoVault(async (sim) => {
        // As the README says: start sshd in the vault (it daemonizes and outlives the exec),
        // put a public key in root's authorized_keys, then ssh through `fly-vault pipe`.
        // (A free port instead of 2222: tests run side by side on one loopback.)
        const started = await sim.client(["exec", "demo", "--", "vault-sshd", "-p", port]);
        assert.equal(started.code, 0, started.stderr);
        const key = join(sim.dir, "id_ed25519");
        const gen = await new Deno.Command("ssh-keygen", {
          args: ["-q", "-t", "ed25519", "-N", "", "-f", key],
        }).output();
        assert.ok(gen.success);
        const cp = await sim.client(["cp", `${key}.pub`, "demo:/root/.ssh/authorized_keys"]);
        assert.equal(cp.code, 0, cp.stderr);

        const ssh = await new Deno.Command("ssh", {
          args: [
            ...["-i", key, "-o", `UserKnownHostsFile=${join(sim.dir, "known_hosts")}`],
            ...["-o", "StrictHostKeyChecking=accept-new", "-o", "BatchMode=yes"],
            ...["-o", `ProxyCommand=${CLI} pipe demo localhost:${port}`],
            "root@demo",
            "echo via-ssh-$((6*7)) $(id -un) $(which python3)",
          ],
          env: { FLY_VAULT_CONFIG_DIR: sim.configDir },
          stdin: "null",
          stdout: "piped",
          stderr: "piped",
          signal: AbortSignal.timeout(60_000),
        }).output();
        assert.equal(ssh.code, 0, new TextDecoder().decode(ssh.stderr));
        assert.equal(new TextDecoder().decode(ssh.stdout), "via-ssh-42 root /usr/bin/python3\n");
      });
    } finally {
      // The machine's end takes its sshd with it; never leave one behind if it did not.
      for (const pid of await processesMatching(new RegExp(`sshd -e -p ${port}( |$)`))) {
        try {
          Deno.kill(pid, "SIGKILL");
        } catch { /* gone */ }
      }
    }
  },
});
