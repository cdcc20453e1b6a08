/**
 * Ends every process running inside a rootfs, found the way the kernel sees
 * it: `/proc/<pid>/root` points at the rootfs. That covers exec, exec -t,
 * consoles, the workload and anything they started, without each having to
 * be registered somewhere. Since the vault has its own PID namespace
 * (namespace.ts, ended as a whole before a swap), this catches what runs
 * outside one: the laptop's `userns` mode, where each program has its own.
 *
 * @module
 */

async function pidsRootedIn(rootfs: string): Promise<number[]> {
  const pids: number[] = [];
  for await (const entry of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    const pid = Number(entry.name);
    if (pid === Deno.pid) continue;
    try {
      if (await Deno.readLink(`/proc/${pid}/root`) === rootfs) pids.push(pid);
    } catch {
      // gone, or not ours to look at
    }
  }
  return pids;
}

function signal(pid: number, sig: Deno.Signal): void {
  try {
    Deno.kill(pid, sig);
  } catch { /* already gone */ }
}

/**
 * SIGTERM to every process rooted in `rootfs`, then SIGKILL to whatever is
 * left after `graceMs`. Resolves with how many it found.
 */
export async function endProcessesIn(rootfs: string, graceMs = 2000): Promise<number> {
  const found = await pidsRootedIn(rootfs);
  if (found.length === 0) return 0;
  found.forEach((pid) => signal(pid, "SIGTERM"));
  const deadline = Date.now() + graceMs;
  while (Date.now() < deadline) {
    if ((await pidsRootedIn(rootfs)).length === 0) return found.length;
    await new Promise((r) => setTimeout(r, 50));
  }
  // A process that forks while we look (a shell loop starting its next `sleep`) can leave a child
  // the first SIGKILL pass did not list: pass again until none is left, within a bound.
  const killDeadline = Date.now() + 2000;
  for (;;) {
    const left = await pidsRootedIn(rootfs);
    if (left.length === 0 || Date.now() > killDeadline) break;
    left.forEach((pid) => signal(pid, "SIGKILL"));
    await new Promise((r) => setTimeout(r, 20));
  }
  return found.length;
}
