/**
 * The real fly-vault against a closed UDP port fails at once with
 * transport.refused (as ssh says "Connection refused"), not after the 10 s
 * connect timeout.
 */
import assert from "node:assert/strict";
import { join } from "node:path";

const BIN = new URL("../bin/fly-vault.ts", import.meta.url).pathname;

Deno.test("fly-vault against a closed loopback UDP port exits 255 with transport.refused well before the timeout", async () => {
  const sock = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const port = (sock.addr as Deno.NetAddr).port;
  sock.close();
  const dir = await Deno.makeTempDir();
  const config = join(dir, "config.toml");
  await Deno.writeTextFile(
    config,
    `[vault.demo]\naddress = "127.0.0.1:${port}"\norg = "o"\napp = "a"\n` +
      `access_token = "${"t".repeat(40)}"\n`,
    { mode: 0o600 },
  );
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--unstable-net",
      BIN,
      "status",
      "demo",
      "--config",
      config,
      "--no-persist",
      "-v",
      "--connect-timeout",
      "10",
    ],
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  const t0 = performance.now();
  const out = await child.output();
  const elapsed = performance.now() - t0;
  await Deno.remove(dir, { recursive: true });
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 255, stderr);
  assert.match(
    stderr,
    /error\[transport\.refused\]: cannot reach 127\.0\.0\.1:\d+: connection refused/,
  );
  assert.match(stderr, /hint: /);
  // 10 s before; now Deno's start-up (about 250 ms; more on a loaded machine) plus milliseconds.
  assert.ok(elapsed < 2000, `took ${Math.round(elapsed)} ms`);
  console.log(`refused after ${Math.round(elapsed)} ms (process start to exit)`);
});

Deno.test("on a terminal, a silent address shows one 'connecting to …' line, then the timeout", async () => {
  const { outerTerminal } = await import("./console_term.ts");
  // Bound and silent: no ICMP comes back, so only the progress line and the deadline speak.
  const silent = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const port = (silent.addr as Deno.NetAddr).port;
  const dir = await Deno.makeTempDir();
  await Deno.writeTextFile(
    join(dir, "config.toml"),
    `[vault.demo]\naddress = "127.0.0.1:${port}"\norg = "o"\napp = "a"\n` +
      `access_token = "${"t".repeat(40)}"\n`,
    { mode: 0o600 },
  );
  const t = outerTerminal({ FLY_VAULT_CONFIG_DIR: dir });
  try {
    await t.waitFor(/outer\$ $/);
    t.type(
      `${Deno.execPath()} run -A --quiet ${BIN} --no-persist --connect-timeout 3 status demo; ` +
        `echo status-$?\r`,
    );
    await t.waitFor(new RegExp(`connecting to 127\\.0\\.0\\.1:${port}…`));
    const rest = await t.waitFor(/status-\d+/);
    assert.match(rest, /transport\.(timeout|unreachable)/);
    assert.doesNotMatch(rest, /connecting to/, "one progress line, not one per second");
    assert.match(rest, /status-255/);
  } finally {
    t.pty.kill("SIGKILL");
    silent.close();
    await Deno.remove(dir, { recursive: true });
  }
});
