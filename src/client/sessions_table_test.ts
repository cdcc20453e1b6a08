import assert from "node:assert/strict";
import { idleText, sessionsTable } from "./sessions_table.ts";

Deno.test("sessions table: aligned columns id, created, attached, command, idle; vault text made inert", () => {
  const lines = sessionsTable([
    {
      id: "1",
      started: "2026-12-02T06:40:01.123Z",
      idle_seconds: 5,
      command: "bash",
      attached: true,
    },
    {
      id: "12",
      started: "2026-12-02T06:41:00Z",
      idle_seconds: 3725,
      command: "vim\x1b[2J\tnotes",
      attached: false,
    },
  ]);
  assert.deepEqual(lines, [
    "ID  CREATED              ATTACHED  COMMAND           IDLE",
    "1   2026-12-02 06:40:01  yes       bash              5s",
    "12  2026-12-02 06:41:00  no        vim\\x1b[2J notes  1h02m",
  ]);
  // Every column starts at the same place on every line.
  for (const h of ["CREATED", "ATTACHED", "COMMAND", "IDLE"]) {
    const col = lines[0].indexOf(h);
    for (const l of lines.slice(1)) assert.equal(l[col - 1], " ", `${h}: ${l}`);
  }
  assert.equal(idleText(59), "59s");
  assert.equal(idleText(600), "10m");
  assert.equal(idleText(90000), "1d1h");
});
