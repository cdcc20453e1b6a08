/**
 * Showing a build's progress: a bar on a terminal (when the total is known),
 * one line per phase otherwise, or JSON events.
 *
 * @module
 */
import cliProgress from "cli-progress";
import type { Writable } from "node:stream";
import { printable } from "../errors/mod.ts";
import type { BuildProgress, BuildResult } from "./build.ts";

/** A progress sink for {@link buildRootfs}'s `onProgress`, plus the final line. */
export interface BuildReporter {
  onProgress(p: BuildProgress): void;
  done(r: BuildResult): void;
  close(): void;
}

const mib = (n: number) => (n / 1048576).toFixed(1);

const KIND_NAMES = {
  dir: "directory",
  image: "image",
  dockerfile: "Dockerfile",
} as const;

/** `building rootfs from ./src (directory) into /…/dev-env.tar.gz (default; -o FILE to choose)` */
function planLine(p: BuildProgress): string {
  const what = p.kind ? ` (${KIND_NAMES[p.kind]})` : "";
  const where = p.defaultOutput ? " (the default; -o FILE to choose)" : "";
  return `building rootfs from ${printable(p.source ?? "?")}${what} into ${
    printable(p.output ?? "?")
  }${where}`;
}

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
      if (p.phase === "plan") {
        // Said before any work, so a long build never leaves the destination a surprise.
        if (opts.json) write(JSON.stringify({ event: "build", ...p }) + "\n");
        else write(planLine(p) + "\n");
        phase = p.phase;
        return;
      }
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
        // The total is an estimate until the end (tar headers, padding): the last update sets it.
        if (p.total !== bar.getTotal()) bar.setTotal(p.total);
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
      if (r.workload) write(`workload: ${printable(JSON.stringify(r.workload))}\n`);
      for (const w of r.warnings) {
        write(`warning[${w.code}]: ${printable(w.message)}\nhint: ${printable(w.hint)}\n`);
      }
    },
    close: stop,
  };
}
