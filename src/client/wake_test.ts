import assert from "node:assert/strict";
import { VaultError } from "../errors/mod.ts";
import { withWakingNotice } from "./wake.ts";

const flags = { json: true } as Parameters<typeof withWakingNotice>[1];

Deno.test("waking notice: silence suggests a suspended vault; a refusal with a reason keeps its own words", async () => {
  const silent = new VaultError("transport.timeout", "cannot reach 10.0.0.1:443: timed out", "");
  await assert.rejects(
    withWakingNotice("dev", flags, () => Promise.reject(silent)),
    (err: VaultError) => err.code === "transport.timeout" && /may be suspended/.test(err.message),
  );
  const refused = new VaultError(
    "transport.unreachable",
    "cannot reach 127.0.0.1:4433: aborted by peer: too many new connections to machine m1; " +
      "retry in a few seconds",
    "",
  );
  await assert.rejects(
    withWakingNotice("dev", flags, () => Promise.reject(refused)),
    (err: VaultError) => err === refused,
  );
});
