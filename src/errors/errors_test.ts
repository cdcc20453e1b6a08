import assert from "node:assert/strict";
import { formatError, isVaultError, networkError, VaultError } from "./mod.ts";

Deno.test("formatError prints code, message and hint", () => {
  const err = new VaultError("config.unknown_vault", "no vault named 'x'", "run fly-vault vaults");
  assert.equal(
    formatError(err),
    "error[config.unknown_vault]: no vault named 'x'\nhint: run fly-vault vaults",
  );
  assert.equal(isVaultError(err, "config."), true);
  assert.equal(isVaultError(err, "attest."), false);
});

Deno.test("formatError marks unknown errors as internal", () => {
  assert.ok(formatError(new Error("boom")).startsWith("error[internal]: boom"));
});

Deno.test("network failures get transport codes and hints, never 'a bug in fly-vault'", () => {
  const cases: [Error, string][] = [
    [new Deno.errors.NotConnected("connection lost"), "transport.lost"],
    [new Error("connection lost"), "transport.lost"],
    [new Error("closed by peer: 0x0"), "transport.lost"],
    [new Error("stream reset by peer: error 0"), "transport.lost"],
    [
      new Deno.errors.BadResource("The stream's underlying resource was closed or consumed"),
      "transport.lost",
    ],
    [new Deno.errors.ConnectionReset("Connection reset by peer (os error 104)"), "transport.lost"],
    [new Deno.errors.BrokenPipe("Broken pipe (os error 32)"), "transport.lost"],
    [new Error("timed out"), "transport.timeout"],
    [new Deno.errors.TimedOut("Connection timed out (os error 110)"), "transport.timeout"],
    [
      new Deno.errors.ConnectionRefused("Connection refused (os error 111)"),
      "transport.unreachable",
    ],
    [new Error("Network is unreachable (os error 101)"), "transport.unreachable"],
  ];
  for (const [err, code] of cases) {
    assert.equal(networkError(err)?.code, code, err.message);
    const text = formatError(err);
    assert.ok(text.startsWith(`error[${code}]: `), text);
    assert.ok(!/bug in fly-vault/.test(text), text);
    assert.match(text, /\nhint: \S/);
  }
  // Not network failures: still internal.
  assert.equal(networkError(new TypeError("x is undefined")), null);
  assert.equal(networkError(new Deno.errors.BadResource("Bad resource ID")), null);
  assert.equal(networkError(new VaultError("a.b", "c")), null);
});
