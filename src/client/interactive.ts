/**
 * The client's interactive and long-running commands: `connect` (provision
 * when needed, forwards, console), `forward`, `pipe`, `cp`, `sessions`,
 * `exec -t` and `build`. Each returns the process exit status.
 *
 * The console, forward, copy and build modules are loaded by the command
 * that needs them: a plain `exec` should not pay for node-pty or GNU tar
 * plumbing at start-up.
 *
 * @module
 */
import process from "node:process";
import { VaultError } from "../errors/mod.ts";
import { ControlReply, ProvisionUrl, SessionsRequest, StreamTag } from "../protocol/mod.ts";
import type { ForwardHandle } from "../forward/mod.ts";
import { expandHome, getVault, loadConfig, type VaultConfig } from "./config.ts";
import { type GlobalFlags, openSession, parseEnvPairs } from "./commands.ts";
import type { VaultSession } from "./connect.ts";
import { exitStatusOf, runExec } from "./exec.ts";
import { HEARTBEAT, reconnecting, type ReconnectingSession } from "./reconnect.ts";

/** Provisions from `rootfs` (upload) or `rootfs_url` (the machine downloads it). */
export async function provision(
  session: VaultSession,
  vault: VaultConfig,
  flags: GlobalFlags,
): Promise<void> {
  const mod = await import("./provision.ts");
  const report = { json: !!flags.json, tty: Deno.stdout.isTerminal(), out: process.stdout };
  // Ctrl-C cancels the provision on the vault too, not only here.
  const stopCancel = mod.cancelOnSignal(() => session.close());
  try {
    await provisionWith(session, vault, report, mod);
  } finally {
    stopCancel();
  }
}

async function provisionWith(
  session: VaultSession,
  vault: VaultConfig,
  report: { json: boolean; tty: boolean; out: typeof process.stdout },
  { provisionReporter, reportServerMessage, uploadRootfs }: typeof import("./provision.ts"),
): Promise<void> {
  if (vault.rootfs) {
    await uploadRootfs(
      () => session.openStream(StreamTag.upload),
      expandHome(vault.rootfs),
      report,
    );
    return;
  }
  if (vault.rootfs_url) {
    const r = provisionReporter(report);
    try {
      await session.control.writer.send(
        ProvisionUrl.parse({ type: "provision_url", url: vault.rootfs_url }),
      );
      while (true) {
        const msg = await session.control.reader.message(ControlReply, "provisioning progress");
        if (msg.type === "progress" || msg.type === "provision_done" || msg.type === "error") {
          reportServerMessage(r, msg);
        }
        if (msg.type === "provision_done") return;
        if (msg.type === "error") throw new VaultError(msg.code, msg.message, msg.hint ?? "");
      }
    } finally {
      r.close();
    }
  }
  throw new VaultError(
    "provision.no_source",
    `vault '${session.name}' has neither rootfs nor rootfs_url`,
    `build a rootfs with \`fly-vault build\` and set rootfs = "~/.config/fly-vault/rootfs/dev-env.tar.gz"`,
  );
}

async function startForwards(
  specs: string[],
  live: ReconnectingSession,
  flags: GlobalFlags,
): Promise<ForwardHandle[]> {
  if (specs.length === 0) return [];
  const { startForward } = await import("../forward/mod.ts");
  const handles: ForwardHandle[] = [];
  try {
    for (const spec of specs) {
      handles.push(startForward((tag) => live.openStream(tag), spec));
      if (flags.verbose) console.error(`fly-vault: forwarding ${spec}`);
    }
  } catch (err) {
    handles.forEach((h) => h.close());
    throw err;
  }
  return handles;
}

/** `fly-vault connect VAULT`: provision when needed, start forwards, open the console. */
export async function connectCommand(
  name: string,
  flags: GlobalFlags & {
    reprovision?: boolean;
    new?: boolean;
    session?: string;
    forward?: string[];
  },
): Promise<number> {
  const config = await loadConfig(flags.config);
  const vault = getVault(config, name);
  const first = await openSession(name, flags, { freshState: true });
  const live = reconnecting(first, () => openSession(name, flags), () => spareSession(name, flags));
  let forwards: ForwardHandle[] = [];
  try {
    const state = first.welcome.state;
    if (flags.reprovision || state !== "ready") {
      if (!flags.reprovision && !flags.json) {
        console.error(`fly-vault: ${name} is ${state}; provisioning it`);
      }
      // Through a master, Ctrl-C could not cancel it on the vault: provision on our own connection.
      const own = first.viaMaster ? await openSession(name, flags, { direct: true }) : first;
      try {
        await provision(own, vault, flags);
      } finally {
        if (own !== first) await own.close();
      }
      if (flags.reprovision && !Deno.stdin.isTerminal()) return 0;
    }
    forwards = await startForwards([...vault.forward, ...(flags.forward ?? [])], live, flags);
    if (!Deno.stdin.isTerminal()) {
      if (stdinIsData()) {
        // As ssh without a terminal: no PTY, the login shell reads our stdin, its output
        // passes through, its exit status is ours (forwards live while it runs; for
        // forwards alone there is `fly-vault forward`, or stdin from /dev/null).
        const stream = await live.openStream(StreamTag.exec);
        return await runExec(
          stream,
          { argv: ['exec "$SHELL" -l'], shell: true, env: {}, tty: false },
          {
            stdin: Deno.stdin.readable,
            stdout: Deno.stdout.writable,
            stderr: Deno.stderr.writable,
          },
        );
      }
      if (forwards.length === 0) {
        console.error("fly-vault: stdin is not a terminal; nothing more to do (no console)");
        return 0;
      }
      console.error("fly-vault: forwarding; Ctrl-C stops");
      const unwatch = watchPath(live, name, flags);
      await untilSignal();
      unwatch();
      return 0;
    }
    const { runConsole } = await import("../console/mod.ts");
    const result = await runConsole((tag) => live.openStream(tag), {
      session: flags.new ? "new" : flags.session,
      name,
      spares: (onFailure) => live.raceSpares(HEARTBEAT.retryMs, onFailure),
      forwards: {
        list: () =>
          forwards.map((h) => {
            const s = h.spec;
            const b = (host: string) => host.includes(":") ? `[${host}]` : host;
            const spec = `${b(s.bind)}:${s.localPort}:${b(s.host)}:${s.remotePort}`;
            return `-L ${spec} (listening on ${h.addr.hostname}:${h.addr.port}, ${h.active} open)`;
          }),
        add: async (spec) => {
          forwards.push(...await startForwards([spec], live, flags));
        },
      },
      reopen: async () => {
        const next = await live.reconnect();
        return (tag) => next.openStream(tag);
      },
    });
    if (!result.exit) return 0; // detached with ~.
    return exitStatusOf(result.exit.code, result.exit.signal);
  } finally {
    forwards.forEach((h) => h.close());
    await live.close();
  }
}

/** Stdin is a pipe or a file (not /dev/null, which scripts give to provision only). */
function stdinIsData(): boolean {
  try {
    const info = Deno.statSync("/dev/stdin");
    return !info.isCharDevice;
  } catch {
    return false;
  }
}

/** Seconds a spare connection may take: the console dials a fresh one every 400 ms anyway. */
const SPARE_CONNECT_TIMEOUT_S = 4;

/**
 * A connection made while the current path is silent: direct (a master's
 * connection may be the silent one) and quick to give up.
 */
function spareSession(name: string, flags: GlobalFlags): Promise<VaultSession> {
  const timeout = Math.min(
    flags.connectTimeout ?? SPARE_CONNECT_TIMEOUT_S,
    SPARE_CONNECT_TIMEOUT_S,
  );
  return openSession(name, { ...flags, connectTimeout: timeout }, { direct: true });
}

/** Without a console, the connection's own heartbeat notices a dead path (on stderr). */
function watchPath(live: ReconnectingSession, name: string, flags: GlobalFlags): () => void {
  return live.watch({
    name,
    onStatus: (line) => console.error(`fly-vault: ${line}`),
    say: flags.verbose ? (line) => console.error(`fly-vault: ${line}`) : undefined,
  });
}

function untilSignal(): Promise<void> {
  return new Promise((resolve) => {
    for (const sig of ["SIGINT", "SIGTERM"] as const) Deno.addSignalListener(sig, resolve);
  });
}

/** `fly-vault forward VAULT SPEC…`: forwards without a console, until Ctrl-C. */
export async function forwardCommand(
  name: string,
  specs: string[],
  flags: GlobalFlags,
): Promise<number> {
  if (specs.length === 0) {
    throw new VaultError(
      "usage.no_forward",
      "forward needs at least one LPORT:HOST:RPORT",
      "e.g. fly-vault forward my-dev 8080:localhost:8080",
    );
  }
  // A bad spec is a usage mistake (exit 2), said before connecting.
  const { parseForwardSpec } = await import("../forward/mod.ts");
  specs.forEach(parseForwardSpec);
  const live = reconnecting(
    await openSession(name, flags),
    () => openSession(name, flags),
    () => spareSession(name, flags),
  );
  const forwards = await startForwards(specs, live, flags);
  const unwatch = watchPath(live, name, flags);
  try {
    console.error(`fly-vault: forwarding ${specs.join(", ")}; Ctrl-C stops`);
    await untilSignal();
    return 0;
  } finally {
    unwatch();
    forwards.forEach((h) => h.close());
    await live.close();
  }
}

/** `fly-vault pipe VAULT HOST:PORT`: stdin/stdout joined to a TCP connection made in the VM. */
export async function pipeCommand(name: string, target: string, flags: GlobalFlags) {
  const { runPipe, parseHostPort } = await import("../forward/mod.ts");
  parseHostPort(target); // a bad target is a usage mistake, said before connecting
  const session = await openSession(name, flags);
  try {
    await runPipe((tag) => session.openStream(tag), target);
    return 0;
  } finally {
    await session.close();
  }
}

/** `fly-vault cp [-r] SRC… DEST`. */
export async function copyCommand(
  args: string[],
  flags: GlobalFlags & { recursive?: boolean },
): Promise<number> {
  const { planCopy, runCopy } = await import("../copy/mod.ts");
  const plan = planCopy(args);
  const session = await openSession(plan.vault, flags);
  try {
    const result = await runCopy((tag) => session.openStream(tag), plan, {
      recursive: flags.recursive,
    });
    if (flags.json) console.log(JSON.stringify(result));
    return 0;
  } finally {
    await session.close();
  }
}

/** `fly-vault sessions VAULT`. */
export async function sessionsCommand(name: string, flags: GlobalFlags): Promise<number> {
  const session = await openSession(name, flags, { control: true });
  try {
    await session.control.writer.send(SessionsRequest.parse({ type: "sessions" }));
    const reply = await session.control.reader.message(ControlReply, "session list");
    if (reply.type === "error") throw new VaultError(reply.code, reply.message, reply.hint ?? "");
    if (reply.type !== "sessions") {
      throw new VaultError("protocol.unexpected", "not a session list");
    }
    if (flags.json) {
      console.log(JSON.stringify(reply.sessions));
      return 0;
    }
    if (reply.sessions.length === 0) {
      console.error("no console sessions; `fly-vault connect` starts one");
      return 0;
    }
    const { sessionsTable } = await import("./sessions_table.ts");
    console.log(sessionsTable(reply.sessions).join("\n"));
    return 0;
  } finally {
    await session.close();
  }
}

/** `fly-vault exec -t VAULT -- argv…`: one command on a remote PTY. */
export async function execTtyCommand(
  name: string,
  argv: string[],
  flags: GlobalFlags & { env?: string[]; cwd?: string; shell?: boolean },
): Promise<number> {
  const env = parseEnvPairs(flags.env);
  const { runExecTty } = await import("../console/mod.ts");
  const session = await openSession(name, flags);
  try {
    const exit = await runExecTty((tag) => session.openStream(tag), {
      argv,
      shell: flags.shell,
      env,
      cwd: flags.cwd,
    });
    return exit.code === null && exit.signal === null ? 0 : exitStatusOf(exit.code, exit.signal);
  } finally {
    await session.close();
  }
}

/** `fly-vault build [SOURCE]`: writes the rootfs tar.gz. */
export async function buildCommand(
  source: string | undefined,
  flags: GlobalFlags & { output?: string; vault?: string; engine?: string },
): Promise<number> {
  let output = flags.output;
  if (!output && flags.vault) {
    const vault = getVault(await loadConfig(flags.config), flags.vault);
    if (vault.rootfs) output = expandHome(vault.rootfs);
  }
  const from = source ?? "Dockerfile";
  if (!source && !await Deno.stat(from).then(() => true, () => false)) {
    throw new VaultError(
      "usage.no_source",
      "no build source given and no ./Dockerfile here",
      "fly-vault build DIR | OCI-LAYOUT | docker-save.tar | Dockerfile [-o out.tar.gz]",
    );
  }
  const { buildRootfs, buildReporter } = await import("../build/mod.ts");
  const report = buildReporter({
    json: !!flags.json,
    tty: Deno.stderr.isTerminal(),
    // Scripts read --json events from stdout; people see progress on stderr.
    out: flags.json ? process.stdout : process.stderr,
  });
  try {
    const result = await buildRootfs({
      source: from,
      output,
      engine: flags.engine,
      onProgress: (p) => report.onProgress(p),
    });
    report.done(result);
  } finally {
    report.close();
  }
  return 0;
}
