/**
 * Garbage collection after closed connections. Each QUIC connection holds
 * ~100 KiB of native memory (quinn's state, buffers) that is freed only when
 * V8 collects its JS wrapper — and V8 does not see that memory, so a small
 * JS heap never feels the pressure: under a handshake flood init grew by
 * ~115 KiB per closed connection without bound (1.3 GiB in the field). A
 * full collection every few dozen closed connections keeps it flat, at a
 * few milliseconds of CPU each.
 *
 * @module
 */
import v8 from "node:v8";
import vm from "node:vm";

/** V8's full collection, or undefined where the runtime won't expose it. */
export function loadGc(): (() => void) | undefined {
  try {
    v8.setFlagsFromString("--expose-gc");
    const gc = vm.runInNewContext("gc") as unknown;
    if (typeof gc === "function") return gc as () => void;
  } catch {
    // not available: fall back to V8's own schedule
  }
  return undefined;
}

/** Counts closed connections; collects after every `every`, at most once per `minIntervalMs`. */
export function createCollector(
  { every = 32, minIntervalMs = 500, gc = loadGc() ?? (() => {}) } = {},
): { closed(): void; runs(): number } {
  let count = 0;
  let last = 0;
  let runs = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const run = () => {
    timer = undefined;
    count = 0;
    last = Date.now();
    runs++;
    gc();
  };
  return {
    closed() {
      if (++count < every || timer) return;
      const wait = last + minIntervalMs - Date.now();
      if (wait <= 0) run();
      // Unref'd: a pending collection must not keep a stopping process alive.
      else Deno.unrefTimer(timer = setTimeout(run, wait));
    },
    runs: () => runs,
  };
}
