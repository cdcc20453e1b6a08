import assert from "node:assert/strict";
import { checkApiBase } from "./api_base.ts";
import { createFlyClient } from "./client.ts";

Deno.test("api base: https anywhere; plain http only on loopback and Fly's private network", () => {
  for (
    const ok of [
      "https://api.machines.dev/",
      "https://10.0.0.1:8080",
      "http://127.0.0.1:4280",
      "http://localhost:4280",
      "http://[::1]:4280",
      "http://_api.internal:4280",
      "http://[fdaa:0:1::3]:4280",
    ]
  ) assert.equal(checkApiBase(ok), ok.replace(/\/+$/, ""), ok);
  for (const bad of ["http://api.machines.dev", "http://10.0.0.1:4280", "http://[2001:db8::1]/"]) {
    assert.throws(() => checkApiBase(bad), { code: "fly.insecure_api_base" }, bad);
  }
  for (const bad of ["ftp://x", "api.machines.dev", "file:///etc/passwd"]) {
    assert.throws(() => checkApiBase(bad), { code: "fly.bad_api_base" }, bad);
  }
});

Deno.test("api base: the Machines API client refuses plain http off the private path before any request", () => {
  assert.throws(
    () => createFlyClient({ apiBase: "http://api.machines.dev", token: "t".repeat(40), app: "a" }),
    { code: "fly.insecure_api_base" },
  );
});
