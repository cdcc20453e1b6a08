import assert from "node:assert/strict";
import { createEscapeParser, type EscapeEvent } from "./escape.ts";

const enc = (s: string) => new TextEncoder().encode(s);
const show = (events: EscapeEvent[]) =>
  events.map((e) => e.type === "data" ? new TextDecoder().decode(e.bytes) : `<${e.type}>`).join(
    "",
  );

function run(...chunks: string[]): string {
  const p = createEscapeParser();
  return chunks.map((c) => show(p.feed(enc(c)))).join("");
}

Deno.test("escape: ~. at the start and after a newline disconnects", () => {
  assert.equal(run("~."), "<disconnect>");
  assert.equal(run("ls\r~."), "ls\r<disconnect>");
  assert.equal(run("ls\n~.rest"), "ls\n<disconnect>rest");
});

Deno.test("escape: ~ in the middle of a line is plain data", () => {
  assert.equal(run("cd ~.", "/x"), "cd ~./x");
  assert.equal(run("a~?"), "a~?");
});

Deno.test("escape: ~~ sends one tilde, ~? asks for help and stays at line start", () => {
  assert.equal(run("\r~~"), "\r~");
  assert.equal(run("~?~."), "<help><disconnect>");
  assert.equal(run("~x"), "~x");
});

Deno.test("escape: a sequence split across reads is still recognised", () => {
  assert.equal(run("echo\r", "~", "."), "echo\r<disconnect>");
  assert.equal(run("~", "~", "~."), "~~.");
});

Deno.test("escape: other bytes (OSC 52, binary) pass through untouched", () => {
  const p = createEscapeParser();
  const osc = enc("x\x1b]52;c;aGVsbG8=\x07\xff");
  const out = p.feed(osc);
  assert.equal(out.length, 1);
  assert.deepEqual(out[0].type === "data" && out[0].bytes, osc);
});

Deno.test("escape: ~# lists forwards, ~C opens the command line, ~^Z suspends; only at line start", () => {
  assert.equal(run("~#"), "<list-forwards>");
  assert.equal(run("ls\r~C-L 1:h:2\r"), "ls\r<command>-L 1:h:2\r");
  assert.equal(run("\n~\x1a"), "\n<suspend>");
  assert.equal(run("~#~."), "<list-forwards><disconnect>");
  assert.equal(run("a~#b~C"), "a~#b~C");
});
