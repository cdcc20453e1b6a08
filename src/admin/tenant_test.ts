import assert from "node:assert/strict";
import type { Machine, MachineEvent } from "./schemas.ts";
import { usageFact } from "./tenant.ts";

const machine = (state: string): Machine =>
  ({ id: "m1", name: "t-0", state, region: "ams", instance_id: "i1", config: {} }) as Machine;
const ev = (status: string, timestamp: number): MachineEvent => ({
  type: status === "started" ? "start" : status === "destroyed" ? "destroy" : status.slice(0, -2),
  status,
  source: "user",
  timestamp,
});
const at = (ms: number) => new Date(ms).toISOString();

Deno.test("usage: a suspend ends a running period as a stop does; a resume starts one", () => {
  const suspended = usageFact(
    machine("suspended"),
    [ev("started", 1_000), ev("suspended", 5_000)],
    new Map(),
  );
  assert.deepEqual([suspended.started_at, suspended.stopped_at], [at(1_000), at(5_000)]);

  const resumed = usageFact(
    machine("started"),
    [ev("started", 1_000), ev("suspended", 5_000), ev("started", 9_000)],
    new Map(),
  );
  assert.deepEqual([resumed.started_at, resumed.stopped_at], [at(9_000), null]);
});

Deno.test("usage: the latest stop counts only when it follows the latest start", () => {
  const f = usageFact(
    machine("started"),
    [ev("stopped", 500), ev("started", 1_000)],
    new Map(),
  );
  assert.deepEqual([f.started_at, f.stopped_at, f.deleted_at], [at(1_000), null, null]);
});
