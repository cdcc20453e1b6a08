/**
 * Child process of the provisioning bench: extracts (or fully provisions)
 * one tarball and prints `{ms, vmhwm_kb}` — its own peak RSS from
 * /proc/self/status, i.e. init's memory high-water mark while provisioning.
 *
 *   deno run -A bench/provision_child.ts extract|provision TARBALL DIR
 */
import { DEFAULT_LIMITS, extractRootfs, openRootfsStore } from "../src/rootfs/mod.ts";

const [mode, tarball, dir] = Deno.args;
const started = performance.now();
const file = await Deno.open(tarball);
if (mode === "extract") {
  await extractRootfs(file.readable, { stagingDir: dir, limits: DEFAULT_LIMITS });
} else {
  const store = await openRootfsStore(dir);
  await store.provision(file.readable);
}
const ms = performance.now() - started;
const status = await Deno.readTextFile("/proc/self/status");
const vmhwm = Number(status.match(/VmHWM:\s+(\d+)/)?.[1]);
console.log(JSON.stringify({ ms, vmhwm_kb: vmhwm }));
