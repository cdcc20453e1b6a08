/**
 * Child of bench/admin_bench.ts: runs `usage-facts` in its own process
 * (so its peak memory is the admin's alone) and prints one JSON line.
 */
import { createFlyClient, usageFacts } from "../src/admin/mod.ts";

const [apiBase, token, app] = Deno.args;
const t0 = performance.now();
const facts = await usageFacts(createFlyClient({ apiBase, token, app }));
const body = JSON.stringify(facts, null, 2);
const ms = performance.now() - t0;
const status = await Deno.readTextFile("/proc/self/status");
const hwmKb = Number(status.match(/VmHWM:\s+(\d+)/)?.[1] ?? NaN);
console.log(
  JSON.stringify({ ms, facts: facts.length, bytes: body.length, peak_rss_mib: hwmKb / 1024 }),
);
