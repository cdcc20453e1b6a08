import assert from "node:assert/strict";
import { isVaultError } from "../errors/mod.ts";
import { parseForwardSpec, parseHostPort } from "./spec.ts";

Deno.test("forward spec: three and four parts, brackets for IPv6", () => {
  assert.deepEqual(parseForwardSpec("8080:localhost:80"), {
    bind: "127.0.0.1",
    localPort: 8080,
    host: "localhost",
    remotePort: 80,
  });
  assert.deepEqual(parseForwardSpec("0.0.0.0:5432:db.internal:5432"), {
    bind: "0.0.0.0",
    localPort: 5432,
    host: "db.internal",
    remotePort: 5432,
  });
  assert.deepEqual(parseForwardSpec("[::1]:9000:[fdaa::3]:22"), {
    bind: "::1",
    localPort: 9000,
    host: "fdaa::3",
    remotePort: 22,
  });
  assert.equal(parseForwardSpec("0:localhost:80").localPort, 0);
});

Deno.test("forward spec: clear errors", () => {
  for (
    const [spec, why] of [
      ["8080", "3 or 4"],
      ["8080:localhost", "3 or 4"],
      ["a:localhost:80", "not a number"],
      ["8080:localhost:0", "out of range"],
      ["70000:localhost:80", "out of range"],
      ["8080::80", "empty"],
      ["1:2:3:4:5", "3 or 4"],
      ["[::1:80:x:1", "unclosed"],
    ]
  ) {
    assert.throws(() => parseForwardSpec(spec), (err: unknown) => {
      assert.ok(isVaultError(err, "forward.bad_spec"), String(err));
      assert.match(err.message, new RegExp(why));
      return true;
    }, spec);
  }
});

Deno.test("pipe target: HOST:PORT", () => {
  assert.deepEqual(parseHostPort("localhost:2222"), { host: "localhost", port: 2222 });
  assert.deepEqual(parseHostPort("[::1]:22"), { host: "::1", port: 22 });
  assert.throws(() => parseHostPort("localhost"), /HOST:PORT/);
  assert.throws(() => parseHostPort("h:99999"), /invalid port/);
});
