import assert from "node:assert/strict";
import { printable } from "./printable.ts";

Deno.test("printable: escapes, OSC, bidi and C1 controls become visible text", () => {
  assert.equal(printable("a\x1b[2Jb"), "a\\x1b[2Jb");
  assert.equal(printable("\x1b]52;c;aGk=\x07"), "\\x1b]52;c;aGk=\\x07");
  assert.equal(printable("x\u202eevil"), "x\\u{202e}evil");
  assert.equal(printable("\x9b31m"), "\\x9b31m");
  assert.equal(printable("line1\nline2\r"), "line1\\x0aline2\\x0d");
  assert.equal(printable("line1\nline2", { multiline: true }), "line1\nline2");
  assert.equal(printable("tab\tok é ✓"), "tab\tok é ✓");
});

Deno.test("printable: long text is cut", () => {
  assert.equal(printable("a".repeat(20), { maxLength: 5 }), "aaaaa…");
});
