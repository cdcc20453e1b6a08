/**
 * `fly-vault sessions` as an aligned table (as `ps`/`docker ps` print):
 * ID, CREATED, ATTACHED, COMMAND, IDLE. Every cell is the vault's text, so it
 * goes through {@link printable}.
 *
 * @module
 */
import { printable } from "../errors/mod.ts";
import type { SessionInfo } from "../protocol/mod.ts";

/** Seconds as `42s`, `5m`, `3h12m`, `2d4h`. */
export function idleText(seconds: number): string {
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86400) {
    return `${Math.floor(s / 3600)}h${String(Math.floor(s % 3600 / 60)).padStart(2, "0")}m`;
  }
  return `${Math.floor(s / 86400)}d${Math.floor(s % 86400 / 3600)}h`;
}

/** An ISO time as `YYYY-MM-DD HH:MM:SS` (UTC); anything else as sent. */
function createdText(started: string): string {
  const m = /^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2}:\d{2})(?:\.\d+)?Z$/.exec(started);
  return m ? `${m[1]} ${m[2]}` : started;
}

/** Rows of cells as lines whose columns line up (the last column is not padded). */
export function alignColumns(rows: string[][]): string[] {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => [...(r[i] ?? "")].length)));
  return rows.map((r) =>
    r.map((cell, i) => i === r.length - 1 ? cell : cell + " ".repeat(widths[i] - [...cell].length))
      .join("  ").trimEnd()
  );
}

/** The sessions as table lines, header first. */
export function sessionsTable(sessions: SessionInfo[]): string[] {
  const cell = (s: string, max: number) => printable(s, { maxLength: max }).replaceAll("\t", " ");
  return alignColumns([
    ["ID", "CREATED", "ATTACHED", "COMMAND", "IDLE"],
    ...sessions.map((s) => [
      cell(s.id, 64),
      cell(createdText(s.started), 64),
      s.attached ? "yes" : "no",
      cell(s.command, 60),
      idleText(s.idle_seconds),
    ]),
  ]);
}
