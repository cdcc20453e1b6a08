import assert from "node:assert/strict";
import { buildHostRootfs } from "../flysim/mod.ts";
import { endProcessesIn } from "./reap.ts";
import { chrootArgv, detectSandbox } from "./sandbox.ts";

Deno.test("every process rooted in the rootfs is ended, one that ignores SIGTERM too", async () => {
  await detectSandbox();
  const rootfs = await Deno.makeTempDir({ prefix: "fv-reap-" });
  await buildHostRootfs(rootfs);
  const spawn = (script: string) => {
    const [cmd, ...args] = chrootArgv(rootfs, ["sh", "-c", script], "/");
    return new Deno.Command(cmd, { args, stdout: "piped" }).spawn();
  };
  const polite = spawn("echo up; exec sleep 100");
  const stubborn = spawn("trap '' TERM; echo up; while :; do sleep 1; done");
  for (const child of [polite, stubborn]) {
    // Wait until each is running inside the rootfs.
    const r = child.stdout.getReader();
    await r.read();
    r.releaseLock();
  }
  const outsider = new Deno.Command("sleep", { args: ["100"] }).spawn();
  const started = performance.now();
  const found = await endProcessesIn(rootfs, 500);
  assert.ok(found >= 3, `found ${found}`); // two shells and their sleeps
  assert.equal((await polite.status).signal, "SIGTERM");
  assert.equal((await stubborn.status).signal, "SIGKILL");
  assert.ok(performance.now() - started < 5000);
  assert.equal(await endProcessesIn(rootfs), 0, "nothing left");
  outsider.kill("SIGKILL"); // untouched until now: it was not in the rootfs
  assert.equal((await outsider.status).signal, "SIGKILL");
  await polite.stdout.cancel();
  await stubborn.stdout.cancel();
  await Deno.remove(rootfs, { recursive: true });
});
