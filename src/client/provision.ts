/**
 * Client side of provisioning: hash the rootfs tarball, stream it on an
 * upload stream, and show what happens — a progress bar with bytes, rate and
 * ETA on a terminal, one line per step otherwise, or one JSON object per
 * line with `--json`. The same reporter renders the server's messages for a
 * provision by URL.
 *
 * @module
 */
import cliProgress from "cli-progress";
import { createHash } from "node:crypto";
import type { Writable } from "node:stream";
import { VaultError } from "../errors/mod.ts";
import {
  type ByteStream,
  type ErrorMessage,
  FrameReader,
  FrameWriter,
  type Progress,
  type ProvisionDone,
  UploadReply,
} from "../protocol/mod.ts";

/** How provisioning output is shown. */
export interface ReportOptions {
  /** One JSON event per line (for scripts); wins over `tty`. */
  json: boolean;
  /** Animated progress bars (stdout is a terminal). */
  tty: boolean;
  /** Where output goes (e.g. `process.stdout`). */
  out: Writable;
}

/** One event of a provision, as printed with `--json`. */
export type ProvisionEvent =
  | { event: "hash"; bytes: number; total: number; sha256?: string }
  | { event: "upload"; bytes: number; total: number; rate: number; eta: number | null }
  | { event: "uploaded"; bytes: number; seconds: number }
  | { event: "progress"; phase: Progress["phase"]; done: number; total?: number; note?: string }
  | {
    event: "done";
    sha256: string;
    bytes: number;
    entries: number;
    seconds: number;
    notes: string[];
  }
  | { event: "error"; code: string; message: string; hint?: string };

const mib = (n: number) => (n / 1048576).toFixed(1);

function eta(seconds: number | null): string {
  if (seconds === null || !Number.isFinite(seconds)) return "--";
  if (seconds < 60) return `${Math.ceil(seconds)}s`;
  return `${Math.floor(seconds / 60)}m${String(Math.ceil(seconds % 60)).padStart(2, "0")}s`;
}

/** Renders provisioning events in the chosen style. */
export interface ProvisionReporter {
  event(e: ProvisionEvent): void;
  /** Stops any bar (call once at the end, success or not). */
  close(): void;
}

/** A reporter for `opts`: JSON lines, terminal bars, or plain step lines. */
export function provisionReporter(opts: ReportOptions): ProvisionReporter {
  const write = (s: string) => void opts.out.write(s);
  if (opts.json) {
    let lastUpload = 0;
    return {
      event(e) {
        if (e.event === "upload" || e.event === "hash") {
          const now = performance.now();
          if (e.bytes < e.total && now - lastUpload < 250) return;
          lastUpload = now;
        }
        write(JSON.stringify(e) + "\n");
      },
      close() {},
    };
  }
  if (opts.tty) {
    let bar: InstanceType<typeof cliProgress.SingleBar> | null = null;
    let barKind = "";
    const stopBar = () => {
      bar?.stop();
      bar = null;
      barKind = "";
    };
    const startBar = (kind: string, format: string, total: number, payload: object) => {
      stopBar();
      barKind = kind;
      bar = new cliProgress.SingleBar({
        format,
        stream: opts.out,
        hideCursor: true,
        clearOnComplete: false,
        etaBuffer: 50,
        fps: 10,
      }, cliProgress.Presets.shades_classic);
      bar.start(Math.max(total, 1), 0, payload);
    };
    return {
      event(e) {
        switch (e.event) {
          case "hash":
            if (barKind !== "hash") {
              startBar("hash", "hash     [{bar}] {percentage}% {done}/{all} MiB", e.total, {
                done: "0.0",
                all: mib(e.total),
              });
            }
            bar!.update(e.bytes, { done: mib(e.bytes), all: mib(e.total) });
            if (e.sha256) stopBar();
            break;
          case "upload":
            if (barKind !== "upload") {
              startBar(
                "upload",
                "upload   [{bar}] {percentage}% {done}/{all} MiB {rate} MiB/s ETA {eta}",
                e.total,
                { done: "0.0", all: mib(e.total), rate: "0.0", eta: "--" },
              );
            }
            bar!.update(e.bytes, {
              done: mib(e.bytes),
              all: mib(e.total),
              rate: mib(e.rate),
              eta: eta(e.eta),
            });
            break;
          case "uploaded":
            stopBar();
            break;
          case "progress":
            if (e.phase === "receive" || e.phase === "download") {
              if (e.phase === "download" && e.total) {
                if (barKind !== "download") {
                  startBar("download", "download [{bar}] {percentage}% {done}/{all} MiB", e.total, {
                    done: "0.0",
                    all: mib(e.total),
                  });
                }
                bar!.update(e.done, { done: mib(e.done), all: mib(e.total) });
              }
              break;
            }
            if (e.phase === "extract") {
              if (barKind !== "extract" && barKind !== "upload" && barKind !== "download") {
                stopBar();
                barKind = "extract";
              }
              if (barKind === "extract") {
                write(`\rextract  ${mib(e.done)} MiB unpacked, ${e.note ?? ""}\x1b[K`);
              }
              break;
            }
            if (barKind === "extract") write("\n");
            stopBar();
            write(`${e.phase.padEnd(8)} ${e.note ?? ""}\n`);
            break;
          case "done":
            if (barKind === "extract") write("\n");
            stopBar();
            write(
              `provisioned: ${e.entries} entries, ${mib(e.bytes)} MiB, sha256:${
                e.sha256.slice(0, 16)
              }…, ${e.seconds.toFixed(1)} s\n`,
            );
            for (const n of e.notes) write(`  note: ${n}\n`);
            break;
          case "error":
            if (barKind === "extract") write("\n");
            stopBar();
            break;
        }
      },
      close: stopBar,
    };
  }
  // Plain: one line per step (each step once), never a carriage return.
  const printed = new Set<string>();
  const once = (step: string, line: string) => {
    if (printed.has(step)) return;
    printed.add(step);
    write(line + "\n");
  };
  return {
    event(e) {
      switch (e.event) {
        case "hash":
          if (e.sha256) once("sha256", `sha256 ${e.sha256} (${mib(e.total)} MiB)`);
          else once("hash", `hashing ${mib(e.total)} MiB`);
          break;
        case "upload":
          once("upload", `uploading ${mib(e.total)} MiB`);
          break;
        case "uploaded":
          once(
            "uploaded",
            `uploaded ${mib(e.bytes)} MiB in ${e.seconds.toFixed(1)} s (${
              mib(e.bytes / Math.max(e.seconds, 0.001))
            } MiB/s)`,
          );
          break;
        case "progress":
          if (e.phase === "receive") break;
          if (e.phase === "download") once(e.phase, "downloading");
          else if (e.phase === "extract") once(e.phase, "extracting");
          else once(e.phase, `${e.phase}${e.note ? ` (${e.note})` : ""}`);
          break;
        case "done":
          once(
            "done",
            `provisioned: ${e.entries} entries, ${mib(e.bytes)} MiB, sha256:${e.sha256}, ${
              e.seconds.toFixed(1)
            } s`,
          );
          for (const n of e.notes) write(`note: ${n}\n`);
          break;
        case "error":
          break;
      }
    },
    close() {},
  };
}

/** Translates a server message for a reporter; returns it unchanged for the caller. */
export function reportServerMessage(
  r: ProvisionReporter,
  m: Progress | ProvisionDone | ErrorMessage,
): void {
  if (m.type === "progress") {
    r.event({ event: "progress", phase: m.phase, done: m.done, total: m.total, note: m.note });
  } else if (m.type === "provision_done") {
    r.event({
      event: "done",
      sha256: m.sha256,
      bytes: m.bytes,
      entries: m.entries,
      seconds: m.seconds,
      notes: m.notes ?? [],
    });
  } else {
    r.event({ event: "error", code: m.code, message: m.message, hint: m.hint });
  }
}

/** sha256 and size of a file, reading it once (fast: it is the OS cache afterwards). */
export async function hashFile(
  path: string,
  onProgress?: (bytes: number, total: number) => void,
): Promise<{ sha256: string; size: number }> {
  const f = await Deno.open(path, { read: true });
  const total = (await f.stat()).size;
  const hash = createHash("sha256");
  let bytes = 0;
  for await (const chunk of f.readable) {
    hash.update(chunk);
    bytes += chunk.length;
    onProgress?.(bytes, total);
  }
  return { sha256: hash.digest("hex"), size: bytes };
}

/**
 * Uploads the rootfs tarball at `tarballPath` on a new upload stream
 * (`openStream` returns it with the tag byte already written) and reports
 * progress until the server says it is done. Resolves with the server's
 * `ProvisionDone`; throws the server's error as a {@link VaultError}.
 */
export async function uploadRootfs(
  openStream: () => Promise<ByteStream>,
  tarballPath: string,
  opts: ReportOptions,
): Promise<ProvisionDone> {
  const r = provisionReporter(opts);
  let reported = false;
  try {
    let st: Deno.FileInfo;
    try {
      st = await Deno.stat(tarballPath);
    } catch (err) {
      throw new VaultError(
        "provision.no_tarball",
        `cannot read the rootfs tarball ${tarballPath}: ${
          err instanceof Error ? err.message : err
        }`,
        "build one with `fly-vault build`, or set `rootfs` in the vault's config",
      );
    }
    r.event({ event: "hash", bytes: 0, total: st.size });
    const { sha256, size } = await hashFile(
      tarballPath,
      (bytes, total) => r.event({ event: "hash", bytes, total }),
    );
    r.event({ event: "hash", bytes: size, total: size, sha256 });

    const stream = await openStream();
    const writer = new FrameWriter(stream.writable);
    const reader = new FrameReader(stream.readable);
    await writer.send({ type: "upload", size, sha256 });

    let stop = false;
    const sending = (async () => {
      const f = await Deno.open(tarballPath, { read: true });
      const started = performance.now();
      let sent = 0;
      try {
        for await (const chunk of f.readable) {
          if (stop) break;
          await writer.raw(chunk);
          sent += chunk.length;
          const secs = (performance.now() - started) / 1000;
          const rate = secs > 0 ? sent / secs : 0;
          r.event({
            event: "upload",
            bytes: sent,
            total: size,
            rate,
            eta: rate > 0 ? (size - sent) / rate : null,
          });
        }
      } catch {
        // The server stopped reading (it refused the tarball): its reply says why.
        stop = true;
      } finally {
        try {
          f.close();
        } catch { /* the iterator closed it */ }
      }
      if (!stop) {
        await writer.close();
        r.event({ event: "uploaded", bytes: sent, seconds: (performance.now() - started) / 1000 });
      } else {
        await writer.abort();
      }
    })();

    let done: ProvisionDone | undefined;
    let failure: VaultError | undefined;
    try {
      for (;;) {
        const frame = await reader.next();
        if (frame === null) break;
        if (frame.kind !== "message") continue;
        const m = UploadReply.parse(frame.message);
        if (m.type === "error") stop = reported = true;
        reportServerMessage(r, m);
        if (m.type === "provision_done") done = m;
        if (m.type === "error") failure = new VaultError(m.code, m.message, m.hint ?? "");
        if (m.type !== "progress") break;
      }
    } finally {
      stop ||= !done;
      await sending;
      await reader.cancel();
    }
    if (failure) throw failure;
    if (!done) {
      throw new VaultError(
        "provision.connection_lost",
        "the connection ended before the vault said the provision was done",
        "the vault keeps its previous rootfs when a provision is cut; run it again",
      );
    }
    return done;
  } catch (err) {
    if (err instanceof VaultError && !reported) {
      r.event({ event: "error", code: err.code, message: err.message, hint: err.hint });
    }
    throw err;
  } finally {
    r.close();
  }
}

/**
 * While a provision runs, Ctrl-C (or TERM/HUP) cancels it on the vault: `close`
 * (the session's) sends the connection close at once, so init aborts the upload or
 * download and cleans its staging instead of waiting out an idle timeout; then the
 * process exits 130. Returns the function that removes the handlers.
 */
export function cancelOnSignal(
  close: () => Promise<void>,
  out: { write(s: string): unknown } = { write: (s) => Deno.stderr.writeSync(enc.encode(s)) },
): () => void {
  const sigs = ["SIGINT", "SIGTERM", "SIGHUP"] as const;
  let fired = false;
  const handler = () => {
    if (fired) Deno.exit(130);
    fired = true;
    out.write("\nfly-vault: cancelling the provision (the vault keeps its previous rootfs)\n");
    const bound = new Promise((r) => setTimeout(r, 2_000));
    void Promise.race([close().catch(() => {}), bound]).then(() => Deno.exit(130));
  };
  for (const s of sigs) Deno.addSignalListener(s, handler);
  return () => {
    for (const s of sigs) Deno.removeSignalListener(s, handler);
  };
}

const enc = new TextEncoder();
