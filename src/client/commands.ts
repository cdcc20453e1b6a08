/**
 * The client's commands, as plain functions the thin `bin/fly-vault.ts`
 * calls after parsing flags. Each returns the process exit status.
 *
 * Exit statuses: the remote command's for `exec`; 0 success; 2 bad usage;
 * 255 when fly-vault itself failed (config, network, attestation, auth),
 * as ssh does.
 *
 * @module
 */
import { resolve } from "node:path";
import { formatError, printable, VaultError } from "../errors/mod.ts";
import { forgetKnownVault } from "../transport/mod.ts";
import { StatusRequest, StreamTag } from "../protocol/mod.ts";
import { getVault, loadConfig, persistMsOf, type VaultConfig } from "./config.ts";
import type { DialEvent } from "../transport/mod.ts";
import { connectVault, type VaultSession } from "./connect.ts";
import { forwardedSignals, runExec } from "./exec.ts";

/** Exit status when fly-vault itself failed. */
export const EXIT_FAILURE = 255;
/** Exit status for bad usage. */
export const EXIT_USAGE = 2;

/** Global flags every command takes. */
export interface GlobalFlags {
  config?: string;
  verbose?: boolean;
  json?: boolean;
  /** Seconds to wait for the machine to answer (like ssh's ConnectTimeout). */
  connectTimeout?: number;
  /** False with `--no-persist`: neither use nor start a master. */
  persist?: boolean;
}

/** After this long without a connection, a terminal user is told we are still connecting. */
const SLOW_CONNECT_MS = 1000;

function say(flags: GlobalFlags, line: string): void {
  if (flags.verbose) console.error(`fly-vault: ${line}`);
}

/** How a command uses the vault's master (persistent client). */
export interface SessionNeeds {
  /** The vault's current state must be fresh (connect decides whether to provision). */
  freshState?: boolean;
  /** The command talks on the control stream (status, sessions, provisioning by URL). */
  control?: boolean;
  /** Never through a master (provisioning: Ctrl-C must cancel it on the vault). */
  direct?: boolean;
}

/**
 * Connects with progress lines on stderr when verbose. With `persist` on (and
 * no `--no-persist`), goes through the vault's master when one is alive, and
 * otherwise connects directly and leaves a master behind.
 */
export async function openSession(
  name: string,
  flags: GlobalFlags,
  needs: SessionNeeds = {},
): Promise<VaultSession> {
  const config = await loadConfig(flags.config);
  const vault = getVault(config, name);
  const direct = async () => {
    // As ssh is silent while it connects but a slow link should not look hung:
    // one line after a second, on a terminal, when -v is not already talking.
    const slow = !flags.verbose && Deno.stderr.isTerminal()
      ? setTimeout(() => console.error(`connecting to ${vault.address}…`), SLOW_CONNECT_MS)
      : undefined;
    try {
      return await connectVault(config, name, vault, {
        timeoutMs: flags.connectTimeout ? flags.connectTimeout * 1000 : undefined,
        onEvent: (e) => sayDialEvent(flags, name, vault, e),
      });
    } finally {
      clearTimeout(slow);
    }
  };
  if (needs.direct || flags.persist === false || persistMsOf(config, name, vault) === 0) {
    return await direct();
  }
  const { useMaster } = await import("./master.ts");
  return await useMaster({
    config,
    name,
    vault,
    direct,
    say: (line) => say(flags, line),
    freshState: needs.freshState,
    control: needs.control,
    masterArgs: [
      "--config",
      resolve(config.path),
      ...(flags.connectTimeout ? ["--connect-timeout", String(flags.connectTimeout)] : []),
    ],
  });
}

function sayDialEvent(
  flags: GlobalFlags,
  name: string,
  vault: VaultConfig,
  e: DialEvent | { type: "authenticated" },
): void {
  if (e.type === "attesting") {
    say(
      flags,
      e.reason === "no-pin"
        ? `attesting ${name} (first contact)…`
        : e.reason === "config-changed"
        ? `the pin for ${name} was made for another address, org, app, issuer or machine; attesting…`
        : `pin for ${name} no longer matches (machine restarted?); attesting again…`,
    );
  } else if (e.type === "attested") {
    say(
      flags,
      `attested: machine ${
        printable(e.machineId, { maxLength: 64 })
      } of ${vault.app} in org ${vault.org}, identity pinned`,
    );
  } else if (e.type === "pinned") say(flags, `pinned identity verified`);
  else if (e.type === "authenticated") say(flags, `authenticated`);
}

/** `fly-vault master VAULT --status|--stop|--serve`. */
export async function masterCommand(
  name: string,
  flags: GlobalFlags & { status?: boolean; stop?: boolean; serve?: boolean },
): Promise<number> {
  const master = await import("./master.ts");
  if (flags.serve) {
    return await master.serveMaster(
      name,
      flags,
      (config, vault, onEvent) =>
        connectVault(config, name, vault, {
          timeoutMs: flags.connectTimeout ? flags.connectTimeout * 1000 : undefined,
          onEvent,
        }),
    );
  }
  return await master.controlMaster(flags, name, flags.stop ? "stop" : "status");
}

/** Codes of usage mistakes (exit 2): a bad spec, target or path list is the user's word, not a failure. */
const USAGE_CODES = /^(usage\.|copy\.usage$|forward\.bad_spec$|forward\.bad_target$)/;

/** Prints an error the way every command does and returns the failure status. */
export function reportError(err: unknown): number {
  console.error(formatError(err));
  return err instanceof VaultError && USAGE_CODES.test(err.code) ? EXIT_USAGE : EXIT_FAILURE;
}

/** `--env KEY=VALUE` flags as an environment. */
export function parseEnvPairs(pairs: string[] = []): Record<string, string> {
  const env: Record<string, string> = {};
  for (const pair of pairs) {
    const eq = pair.indexOf("=");
    if (eq < 1) {
      throw new VaultError("usage.bad_env", `--env ${pair} is not KEY=VALUE`, "e.g. --env FOO=bar");
    }
    env[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  return env;
}

/** `fly-vault exec VAULT -- argv…` */
export async function execCommand(
  name: string,
  argv: string[],
  flags: GlobalFlags & { noStdin?: boolean; env?: string[]; cwd?: string; shell?: boolean },
): Promise<number> {
  if (argv.length === 0) {
    throw new VaultError(
      "usage.no_command",
      "exec needs a command",
      "fly-vault exec <vault> -- <command> [args…]",
    );
  }
  const env = parseEnvPairs(flags.env);
  const session = await openSession(name, flags);
  try {
    const stream = await session.openStream(StreamTag.exec);
    return await runExec(
      stream,
      // `shell` only when set: an argv request keeps the shape an older init accepts.
      { argv, ...(flags.shell ? { shell: true as const } : {}), env, cwd: flags.cwd, tty: false },
      {
        stdin: flags.noStdin ? undefined : Deno.stdin.readable,
        stdout: Deno.stdout.writable,
        stderr: Deno.stderr.writable,
      },
      forwardedSignals(),
    );
  } finally {
    await session.close();
  }
}

/** `fly-vault status VAULT`: attest/pin/auth and show the provisioning state. */
export async function statusCommand(name: string, flags: GlobalFlags): Promise<number> {
  // A suspended vault answers nothing until it wakes: say so instead of hanging silently.
  const { withWakingNotice } = await import("./wake.ts");
  const session = await withWakingNotice(
    name,
    flags,
    () => openSession(name, flags, { control: true }),
  );
  try {
    await session.control.writer.send(StatusRequest.parse({ type: "status" }));
    const frame = await session.control.reader.next();
    const status = frame?.kind === "message" ? frame.message as Record<string, unknown> : {};
    const out = {
      vault: name,
      machine_id: session.welcome.machine_id,
      attested_now: session.attested,
      ...status,
    };
    if (flags.json) console.log(JSON.stringify(out));
    else {
      console.log(`vault       ${name}`);
      console.log(`machine     ${out.machine_id}`);
      console.log(`state       ${status.state}${status.reason ? ` (${status.reason})` : ""}`);
      if (status.sha256) console.log(`rootfs      sha256:${status.sha256}`);
    }
    return 0;
  } finally {
    await session.close();
  }
}

/** `fly-vault vaults`: the configured vaults. */
export async function vaultsCommand(flags: GlobalFlags): Promise<number> {
  const config = await loadConfig(flags.config);
  const rows = Object.entries(config.vaults).map(([name, v]) => ({
    name,
    address: v.address,
    org: v.org,
    app: v.app,
    machine_id: v.machine_id ?? null,
  }));
  if (flags.json) {
    console.log(JSON.stringify(rows));
    return 0;
  }
  if (rows.length === 0) {
    console.error(`no vaults in ${config.path}`);
    console.error("hint: add a [vault.NAME] table with address, org, app and access_token");
    return 0;
  }
  for (const r of rows) {
    console.log(
      `${r.name}\t${r.address}\t${r.org}/${r.app}${r.machine_id ? `\t${r.machine_id}` : ""}`,
    );
  }
  return 0;
}

/** `fly-vault forget VAULT`: drop the pinned identity and machine, as ssh-keygen -R does. */
export async function forgetCommand(name: string, flags: GlobalFlags): Promise<number> {
  const config = await loadConfig(flags.config);
  const vault = config.vaults[name];
  if (vault) {
    // A master's connection rests on the pin being dropped: it goes first.
    const { stopMasterOf } = await import("./master.ts");
    if (await stopMasterOf(config, name, vault)) say(flags, `stopped the master for ${name}`);
  }
  if (!await forgetKnownVault(config.knownVaultsPath, name)) {
    throw new VaultError(
      "known_vaults.no_entry",
      `no pinned identity for '${name}' in ${config.knownVaultsPath}`,
      "forget takes the name of a vault this computer has connected to; `fly-vault vaults` " +
        "lists the configured ones",
    );
  }
  say(flags, `forgot the pinned identity of ${name}; the next connect attests again`);
  return 0;
}
