/**
 * `fly-vault wake` repeats the Machines API's words (a machine's state): whatever the API (or
 * whoever answers at --api-base) says reaches the terminal inert, on every line.
 */
import assert from "node:assert/strict";
import { join } from "node:path";

const BIN = new URL("../bin/fly-vault.ts", import.meta.url).pathname;
const HOSTILE = "\x1b]0;owned\x07\x1b[2Jstopped\x9b31m";

Deno.test("fly-vault wake: a hostile machine state reaches the terminal inert", async () => {
  let started = false;
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    const path = new URL(req.url).pathname;
    if (path.endsWith("/start")) {
      started = true;
      return Response.json({ ok: true });
    }
    if (path.endsWith("/wait")) return Response.json({ ok: true, state: "started" });
    return Response.json({
      id: "0123456789abcd",
      state: started ? "started" : HOSTILE,
      events: [],
    });
  });
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(
      join(dir, "config.toml"),
      `[vault.demo]\naddress = "127.0.0.1:9"\norg = "o"\napp = "a"\n` +
        `machine_id = "0123456789abcd"\naccess_token = "${"t".repeat(40)}"\n`,
      { mode: 0o600 },
    );
    for (const json of [false, true]) {
      const out = await new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          "--quiet",
          BIN,
          "wake",
          "demo",
          "--api-base",
          `http://127.0.0.1:${server.addr.port}`,
          ...(json ? ["--json"] : []),
        ],
        env: { FLY_VAULT_CONFIG_DIR: dir, NO_COLOR: "1", FLY_API_TOKEN: "tok-not-printed" },
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
        signal: AbortSignal.timeout(30_000),
      }).output();
      const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
      assert.equal(out.code, 0, text);
      assert.ok(started, "the machine was started");
      // deno-lint-ignore no-control-regex
      assert.doesNotMatch(text, /[\x07\x1b\x7f-\x9f]/, `raw control characters in: ${text}`);
      assert.doesNotMatch(text, /tok-not-printed/);
      started = false;
    }
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});
