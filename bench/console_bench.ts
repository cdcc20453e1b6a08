/**
 * Keystroke echo latency through a fly-vault console (real QUIC transport,
 * real init-side handler, bash on a PTY chrooted in a small rootfs) against
 * `ssh -tt` to an sshd on loopback running bash, in the same run. One key
 * at a time: send `a`, time until its echo arrives, erase it, repeat.
 *
 *   npx deno run -A bench/console_bench.ts [KEYS]
 *
 * Prints JSON.
 */
import { dialQuic } from "../src/transport/mod.ts";
import { FrameReader, FrameWriter, StreamTag } from "../src/protocol/mod.ts";
import { join } from "node:path";
import { spawnPty } from "../src/console/pty.ts";
import { startSshd } from "../tests/sshd.ts";
import { ROOT, startSim, vaultFor } from "../tests/harness.ts";

const KEYS = Number(Deno.args[0] ?? 300);
const WARMUP = 20;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))];
}
const summary = (xs: number[]) => ({
  p50_ms: +quantile(xs, 0.5).toFixed(3),
  p99_ms: +quantile(xs, 0.99).toFixed(3),
  mean_ms: +(xs.reduce((a, b) => a + b, 0) / xs.length).toFixed(3),
  samples: xs.length,
});

/** A byte source we can wait on: resolves when the accumulated output matches. */
function outputWaiter(next: () => Promise<Uint8Array | null>) {
  let text = "";
  return {
    async until(pred: (text: string) => boolean): Promise<void> {
      while (!pred(text)) {
        const chunk = await next();
        if (chunk === null) {
          throw new Error(`output ended; last: ${JSON.stringify(text.slice(-200))}`);
        }
        text += decoder.decode(chunk, { stream: true });
      }
      text = "";
    },
  };
}

async function measure(
  send: (bytes: Uint8Array) => Promise<void>,
  out: ReturnType<typeof outputWaiter>,
): Promise<number[]> {
  const samples: number[] = [];
  for (let i = 0; i < KEYS + WARMUP; i++) {
    const t0 = performance.now();
    await send(encoder.encode("a"));
    await out.until((t) => t.includes("a"));
    const dt = performance.now() - t0;
    if (i >= WARMUP) samples.push(dt);
    await send(encoder.encode("\x7f"));
    await out.until((t) => t.includes("\b"));
  }
  return samples;
}

async function flyVault(): Promise<number[]> {
  const server = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--quiet", new URL("./console_server.ts", import.meta.url).pathname],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const lines = server.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let first = "";
  while (!first.includes("\n")) {
    const { value, done } = await lines.read();
    if (done) throw new Error("bench server exited");
    first += value;
  }
  const info = JSON.parse(first.split("\n")[0]);
  try {
    const conn = await dialQuic({
      address: `127.0.0.1:${info.port}`,
      serverName: info.serverName,
      caPem: info.caPem,
      timeoutMs: 5000,
    });
    const stream = await conn.openStream(StreamTag.console);
    const writer = new FrameWriter(stream.writable);
    const reader = new FrameReader(stream.readable);
    await writer.send({
      type: "console",
      session: "new",
      term: "xterm",
      cols: 80,
      rows: 24,
      env: {},
    });
    const out = outputWaiter(async () => {
      while (true) {
        const f = await reader.next();
        if (f === null) return null;
        if (f.kind === "data") return f.bytes;
      }
    });
    await out.until((t) => t.includes("fv# "));
    const samples = await measure((b) => writer.data(1, b), out);
    conn.close();
    return samples;
  } finally {
    server.kill("SIGTERM");
    await server.status;
  }
}

async function ssh(): Promise<number[]> {
  const sshd = await startSshd();
  try {
    const child = new Deno.Command("ssh", {
      args: [
        "-tt",
        ...sshd.options,
        "root@127.0.0.1",
        "env PS1='fv# ' bash --norc --noprofile -i",
      ],
      stdin: "piped",
      stdout: "piped",
      stderr: "null",
    }).spawn();
    const w = child.stdin.getWriter();
    const r = child.stdout.getReader();
    const out = outputWaiter(async () => {
      const { value, done } = await r.read();
      return done ? null : value;
    });
    await out.until((t) => t.includes("fv# "));
    const samples = await measure((b) => w.write(b), out);
    await w.write(encoder.encode("exit\r"));
    await w.close().catch(() => {});
    child.kill("SIGTERM");
    await child.status;
    return samples;
  } finally {
    await sshd.stop();
  }
}

/** Output of a program running on a local PTY (what a terminal emulator sees). */
function ptyProgram(argv: string[], env: Record<string, string>) {
  const p = spawnPty(argv, {
    cols: 80,
    rows: 24,
    term: "xterm",
    env: { PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin", HOME: "/root", TERM: "xterm", ...env },
  });
  const queue: Uint8Array[] = [];
  let wake: (() => void) | null = null;
  let ended = false;
  p.onData((b) => {
    queue.push(b);
    wake?.();
  });
  p.onExit(() => {
    ended = true;
    wake?.();
  });
  const next = async (): Promise<Uint8Array | null> => {
    while (!queue.length) {
      if (ended) return null;
      await new Promise<void>((r) => wake = r);
      wake = null;
    }
    return queue.shift()!;
  };
  return { p, out: outputWaiter(next) };
}

/** Both real clients on a local PTY, as a user types: `fly-vault connect` and `ssh -tt`. */
async function clientsInPty(): Promise<{ fly_vault: number[]; ssh: number[] }> {
  const sim = await startSim();
  const sshd = await startSshd();
  try {
    const m = await sim.startMachine("bench1");
    await sim.writeConfig({ demo: vaultFor(sim, m) });
    const fvc = ptyProgram(
      [
        Deno.execPath(),
        "run",
        "-A",
        "--quiet",
        join(ROOT, "bin", "fly-vault.ts"),
        "connect",
        "demo",
      ],
      { FLY_VAULT_CONFIG_DIR: sim.configDir },
    );
    await fvc.out.until((t) => /[#$] $/.test(t));
    const fly = await measure((b) => Promise.resolve(fvc.p.write(b)), fvc.out);
    fvc.p.write(encoder.encode("exit\r"));
    const sshc = ptyProgram([
      "ssh",
      "-tt",
      ...sshd.options,
      "root@127.0.0.1",
      "env PS1='fv# ' bash --norc --noprofile -i",
    ], {});
    await sshc.out.until((t) => t.includes("fv# "));
    const base = await measure((b) => Promise.resolve(sshc.p.write(b)), sshc.out);
    sshc.p.write(encoder.encode("exit\r"));
    fvc.p.kill("SIGKILL");
    sshc.p.kill("SIGKILL");
    return { fly_vault: fly, ssh: base };
  } finally {
    await sshd.stop();
    await sim.close();
  }
}

const fv = await flyVault();
const base = await ssh();
const viaPty = await clientsInPty();
const result = {
  bench: "console keystroke echo latency (loopback)",
  keys: KEYS,
  fly_vault_console: summary(fv),
  ssh_tt: summary(base),
  p50_ratio_fly_vault_over_ssh: +(quantile(fv, 0.5) / quantile(base, 0.5)).toFixed(3),
  p99_ratio_fly_vault_over_ssh: +(quantile(fv, 0.99) / quantile(base, 0.99)).toFixed(3),
  clients_in_a_pty: {
    fly_vault_connect: summary(viaPty.fly_vault),
    ssh_tt: summary(viaPty.ssh),
    p50_ratio: +(quantile(viaPty.fly_vault, 0.5) / quantile(viaPty.ssh, 0.5)).toFixed(3),
    p99_ratio: +(quantile(viaPty.fly_vault, 0.99) / quantile(viaPty.ssh, 0.99)).toFixed(3),
  },
  notes:
    "fly-vault: real QUIC transport and init console handler in a separate process, bash -l on a PTY in a chroot; keys sent as protocol frames from this process. ssh: ssh -tt client process to sshd, bash -i on a PTY. Same machine, same run. clients_in_a_pty: the real `fly-vault connect` (flysim machine, attested and pinned) and `ssh -tt`, each on a local PTY that the bench types into, as a terminal emulator would.",
};
console.log(JSON.stringify(result, null, 2));
