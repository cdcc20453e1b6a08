/**
 * `echo cmd | fly-vault connect VAULT` behaves as ssh without a terminal: no
 * PTY, the vault user's login shell reads stdin, its output passes through and
 * its exit status is ours. The real client against real init (tests/harness.ts).
 */
import assert from "node:assert/strict";
import { startSim, vaultFor } from "./harness.ts";

Deno.test("piping into connect runs the login shell on stdin, without a PTY, with its exit status", async () => {
  const sim = await startSim();
  try {
    const m = await sim.startMachine("m0001");
    await sim.writeConfig({ demo: vaultFor(sim, m) });
    const r = await sim.client(["connect", "demo"], {
      stdin: "echo hello from $0\nif [ -t 0 ]; then echo tty; else echo no-tty; fi\n" +
        "echo oops >&2\nexit 7\n",
    });
    assert.equal(r.code, 7, r.stderr);
    const lines = r.stdout.trim().split("\n");
    assert.match(lines[0], /^hello from \S*sh$/);
    assert.equal(lines[1], "no-tty");
    assert.match(r.stderr, /oops/);
    assert.doesNotMatch(r.stderr, /nothing more to do/);

    const plain = await sim.client(["connect", "demo"], { stdin: "uname -s\n" });
    assert.equal(plain.code, 0, plain.stderr);
    assert.equal(plain.stdout, "Linux\n");

    // With a forward, as ssh -L with piped commands: the shell runs (it used to only forward).
    const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const lport = (probe.addr as Deno.NetAddr).port;
    probe.close();
    const fwd = await sim.client(["connect", "demo", "-L", `${lport}:127.0.0.1:9`], {
      stdin: "echo with-forward; exit 3\n",
    });
    assert.equal(fwd.code, 3, fwd.stderr);
    assert.equal(fwd.stdout, "with-forward\n");
  } finally {
    await sim.close();
  }
});
