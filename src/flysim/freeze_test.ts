import assert from "node:assert/strict";
import { createFreezer } from "./freeze.ts";

/**
 * A freezer of `kind` and, under it, a two-level process tree (a shell whose
 * child answers lines with a counter), with a way to say a line and read answers.
 */
async function answeringTree(kind: "cgroup2" | "signals") {
  const previous = Deno.env.get("FLYSIM_FREEZER");
  if (kind === "signals") Deno.env.set("FLYSIM_FREEZER", "signals");
  const freezer = await createFreezer(`test-${crypto.randomUUID().slice(0, 8)}`);
  if (previous === undefined) Deno.env.delete("FLYSIM_FREEZER");
  else Deno.env.set("FLYSIM_FREEZER", previous);
  assert.equal(freezer.kind, kind);
  const argv = freezer.wrap([
    "/bin/sh",
    "-c",
    // The answering loop runs in a child of the first process (a subshell in a pipeline).
    'n=0; while read l; do n=$((n+1)); echo "got-$l-$n"; done | cat',
  ]);
  const child = new Deno.Command(argv[0], {
    args: argv.slice(1),
    stdin: "piped",
    stdout: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const say = (s: string) => writer.write(new TextEncoder().encode(s + "\n"));
  return { freezer, child, writer, reader, say };
}

/**
 * A two-level process tree (a shell whose child answers lines) frozen and
 * thawed: while frozen a line gets no answer; thawed, it is answered, with
 * the child's state (a counter) kept.
 */
async function freezeRoundTrip(kind: "cgroup2" | "signals") {
  const { freezer, child, writer, reader, say } = await answeringTree(kind);
  try {
    await say("a");
    assert.equal((await reader.read()).value, "got-a-1\n");
    await freezer.freeze(child.pid);
    await say("b");
    // Frozen: no answer within a generous bound (absence can only be shown by waiting).
    const pending = reader.read();
    const raced = await Promise.race([
      pending.then(() => "answered"),
      new Promise((r) => setTimeout(() => r("silent"), 400)),
    ]);
    assert.equal(raced, "silent");
    await freezer.thaw(child.pid);
    assert.equal((await pending).value, "got-b-2\n");
  } finally {
    await writer.close().catch(() => {});
    await child.status;
    await freezer.release();
  }
}

Deno.test("freezer: cgroup v2 freezes and thaws a whole process tree with its state", async () => {
  const root = (await Deno.readTextFile("/proc/self/mountinfo")).includes(" - cgroup2 ");
  assert.ok(root && Deno.uid() === 0, "tests run as root with cgroup v2 mounted");
  await freezeRoundTrip("cgroup2");
});

Deno.test("freezer: SIGSTOP/SIGCONT fallback freezes and thaws the tree", async () => {
  await freezeRoundTrip("signals");
});

/**
 * A frozen tree killed: it dies where it stands. A line written while it was
 * frozen is never answered (a thaw before the kill would let it answer).
 */
async function killFrozen(kind: "cgroup2" | "signals") {
  const { freezer, child, writer, reader, say } = await answeringTree(kind);
  try {
    await say("a");
    assert.equal((await reader.read()).value, "got-a-1\n");
    await freezer.freeze(child.pid);
    await say("b");
    await freezer.kill(child.pid);
    let rest = "";
    for (let r = await reader.read(); !r.done; r = await reader.read()) rest += r.value;
    assert.equal(rest, "", "the frozen tree answered before it died");
    assert.equal((await child.status).signal, "SIGKILL");
  } finally {
    await writer.close().catch(() => {});
    await child.status;
    await freezer.release();
  }
}

Deno.test("freezer: cgroup v2 kills a frozen tree without letting it run", async () => {
  await killFrozen("cgroup2");
});

Deno.test("freezer: the signals fallback kills a stopped tree without a SIGCONT", async () => {
  await killFrozen("signals");
});
