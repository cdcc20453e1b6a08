/**
 * Structured logs: one JSON object per line on stderr, which Fly's log
 * shipper and `fly logs` keep as is. Never pass a token in `fields`.
 *
 * @module
 */

/** Writes one log event. */
export function log(event: string, fields: Record<string, unknown> = {}): void {
  const line = JSON.stringify({ ts: new Date().toISOString(), event, ...fields });
  console.error(line);
}
