import assert from "node:assert/strict";
import { formatError, isVaultError, VaultError } from "./mod.ts";

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
