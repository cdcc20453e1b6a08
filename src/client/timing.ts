/**
 * Phase timestamps for finding where a command's time goes (issue 10): with
 * `FLY_VAULT_TIMING=FILE` set, each mark appends `pid wall-ms since-start-ms
 * what` to FILE (the client and its master alike); without it, nothing.
 *
 * @module
 */
const path = Deno.env.get("FLY_VAULT_TIMING");

/** Appends one mark when timing is on. */
export function mark(what: string): void {
  if (!path) return;
  try {
    Deno.writeTextFileSync(
      path,
      `${Deno.pid} ${Date.now()} ${performance.now().toFixed(1)} ${what}\n`,
      { append: true },
    );
  } catch { /* timing is best effort */ }
}
