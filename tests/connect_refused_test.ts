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
