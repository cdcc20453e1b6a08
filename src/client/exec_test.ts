import assert from "node:assert/strict";
import { ExecRequest, parseMessage } from "../protocol/mod.ts";
import { execError } from "./exec.ts";

Deno.test("an init older than shell exec: its refusal is named, with --argv as the way out", () => {
  // What such an init answers: its strict schema, without the shell field.
  const old = ExecRequest.omit({ shell: true });
  let refusal: { code: string; message: string; hint?: string } | undefined;
  try {
    parseMessage(old, { type: "exec", argv: ["ls | head"], shell: true }, "exec request");
  } catch (err) {
    refusal = err as { code: string; message: string; hint: string };
  }
  assert.ok(refusal);
  const err = execError(refusal, true);
  assert.equal(err.code, "exec.shell_unsupported");
  assert.match(err.hint, /--argv/);
  // An argv request is the shape such an init accepts; other errors pass through as they are.
  assert.doesNotThrow(() => parseMessage(old, { type: "exec", argv: ["ls"] }));
  assert.equal(execError(refusal, false).code, "protocol.bad_message");
  assert.equal(execError({ code: "exec.no_cwd", message: "m" }, true).code, "exec.no_cwd");
});
