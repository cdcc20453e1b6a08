/**
 * Phase marks for finding where a command's time goes (issue 10): with
 * `FLY_VAULT_TIMING=FILE` set, each mark appends `pid epoch-ms since-start-ms
 * what` to FILE (a client and its master alike); without it, nothing.
 * `bench/exec_phases.ts` reads them.
 *
 * @module
 */
const path = Deno.env.get("FLY_VAULT_TIMING");

/** Appends one mark when timing is on. */
export function mark(what: string): void {
  if (!path) return;
  try {
    const now = performance.now();
    Deno.writeTextFileSync(
      path,
      `${Deno.pid} ${(performance.timeOrigin + now).toFixed(2)} ${now.toFixed(2)} ${what}\n`,
      { append: true },
    );
  } catch { /* timing is best effort */ }
}
