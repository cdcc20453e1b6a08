/**
 * Showing a build's progress: a bar on a terminal (when the total is known),
 * one line per phase otherwise, or JSON events.
 *
 * @module
 */
import cliProgress from "cli-progress";
import type { Writable } from "node:stream";
import type { BuildProgress, BuildResult } from "./build.ts";

/** A progress sink for {@link buildRootfs}'s `onProgress`, plus the final line. */
export interface BuildReporter {
  onProgress(p: BuildProgress): void;
  done(r: BuildResult): void;
  close(): void;
}

const mib = (n: number) => (n / 1048576).toFixed(1);

/** A reporter in the style asked for (`--json`, terminal, or plain lines). */
export function buildReporter(opts: { json: boolean; tty: boolean; out: Writable }): BuildReporter {
  const write = (s: string) => void opts.out.write(s);
  let bar: InstanceType<typeof cliProgress.SingleBar> | null = null;
  let phase = "";
  let last = 0;
  const stop = () => {
    bar?.stop();
    bar = null;
  };
  return {
    onProgress(p) {
      if (opts.json) {
        const now = performance.now();
        if (p.phase === phase && now - last < 250) return;
        last = now;
        phase = p.phase;
        write(JSON.stringify({ event: "build", ...p }) + "\n");
        return;
      }
      if (opts.tty && p.total) {
        if (p.phase !== phase || !bar) {
          stop();
          bar = new cliProgress.SingleBar({
            format: `${p.phase.padEnd(5)} [{bar}] {percentage}% {done}/{all} MiB {note}`,
            stream: opts.out,
            hideCursor: true,
          }, cliProgress.Presets.shades_classic);
          bar.start(p.total, 0, { done: "0.0", all: mib(p.total), note: "" });
        }
        bar.update(Math.min(p.done, p.total), {
          done: mib(p.done),
          all: mib(p.total),
          note: p.note ?? "",
        });
      } else if (p.phase !== phase) {
        stop();
        write(`${p.phase}${p.note ? ` ${p.note}` : ""}\n`);
      }
      phase = p.phase;
    },
    done(r) {
      stop();
      if (opts.json) {
        write(JSON.stringify({ event: "built", ...r }) + "\n");
        return;
      }
      write(
        `wrote ${r.output} (${mib(r.bytes)} MiB, ${mib(r.uncompressedBytes)} MiB unpacked, ` +
          `${r.seconds.toFixed(1)} s)\nsha256 ${r.sha256}\n`,
      );
      if (r.workload) write(`workload: ${JSON.stringify(r.workload)}\n`);
    },
    close: stop,
  };
}
