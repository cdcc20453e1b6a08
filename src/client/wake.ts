/**
 * Waking a vault that suspended itself when idle (or was stopped). Through
 * vault-proxy a connect wakes it by itself; a client reaching the vault
 * directly over 6PN has nobody to do that, so `fly-vault wake VAULT` (or
 * `connect --wake`) starts the machine through the Machines API with a Fly
 * API token the user supplies in `FLY_API_TOKEN` (never printed), waits for
 * `started`, and lets the command go on.
 *
 * Also here: the notice `status` gives when a vault does not answer at
 * once (it may be suspended and waking), and the hint when it never does.
 *
 * @module
 */
import { isVaultError, printable, VaultError } from "../errors/mod.ts";
import { lookupKnownVault } from "../transport/mod.ts";
import { getVault, loadConfig } from "./config.ts";
import type { GlobalFlags } from "./commands.ts";

/** Options of {@link wakeCommand}. */
export interface WakeFlags extends GlobalFlags {
  /** The Machines API (default https://api.machines.dev). */
  apiBase?: string;
  /** Longest the start may take, in seconds (default 60). */
  wakeTimeout?: number;
}

/** Where the Machines API is when `--api-base` is not given. */
export const DEFAULT_WAKE_API_BASE = "https://api.machines.dev";

/**
 * Starts the vault's machine (resumes it when suspended) and waits until it
 * is `started`. Resolves to 0; throws `wake.*` or `fly.*` errors that say why.
 */
export async function wakeCommand(name: string, flags: WakeFlags): Promise<number> {
  const say = (line: string) => {
    if (!flags.json) console.error(`fly-vault: ${line}`);
  };
  const config = await loadConfig(flags.config);
  const vault = getVault(config, name);
  const token = Deno.env.get("FLY_API_TOKEN");
  if (!token) {
    throw new VaultError(
      "usage.wake_no_token",
      "waking a vault needs a Fly API token in FLY_API_TOKEN",
      "e.g. FLY_API_TOKEN=$(fly tokens create deploy -a APP) fly-vault wake VAULT; " +
        "through vault-proxy a connect wakes the vault by itself",
    );
  }
  const pinned = await lookupKnownVault(config.knownVaultsPath, name).catch(() => undefined);
  const machineId = vault.machine_id ??
    (pinned && pinned.app === vault.app ? pinned.machineId : undefined);
  if (!machineId) {
    throw new VaultError(
      "usage.wake_no_machine",
      `[vault.${name}] has no machine_id, and no earlier connect pinned one`,
      "add machine_id (fly-vault-admin list shows it) to the vault's table in config.toml",
    );
  }
  const timeoutMs = (flags.wakeTimeout ?? 60) * 1000;
  const { createFlyClient } = await import("../admin/mod.ts");
  const fly = createFlyClient({
    apiBase: flags.apiBase ?? DEFAULT_WAKE_API_BASE,
    token,
    app: vault.app,
    deadlineMs: timeoutMs,
  });
  const started = performance.now();
  const before = await fly.getMachine(machineId).catch((err) => {
    throw clientHint(err, name, vault.app);
  });
  const id = printable(machineId, { maxLength: 64 });
  if (before.state === "started") {
    say(`${name} (machine ${id}) is already started`);
    return 0;
  }
  if (before.state === "destroyed" || before.state === "destroying") {
    throw new VaultError(
      "wake.destroyed",
      `${name}'s machine ${id} is ${before.state}; there is nothing to wake`,
      "the tenant was deleted or recreated: ask the admin, then `fly-vault forget " + name + "`",
    );
  }
  // The API's words: inert wherever they are repeated (the last line and --json too).
  const from = printable(before.state, { maxLength: 32 });
  say(`waking ${name} (machine ${id}, ${from})…`);
  await fly.startMachine(machineId).catch((err) => {
    throw clientHint(err, name, vault.app);
  });
  // `failed` too: a machine that cannot start says so at once rather than at the deadline.
  await fly.waitMachine(machineId, {
    state: "started,failed",
    timeoutSec: Math.max(1, Math.min(60, Math.ceil(timeoutMs / 1000))),
  });
  const after = await fly.getMachine(machineId);
  if (after.state !== "started") {
    const last = [...(after.events ?? [])].sort((a, b) => b.timestamp - a.timestamp)[0];
    const why = (last as { request?: { error?: unknown } } | undefined)?.request?.error;
    throw new VaultError(
      "wake.failed",
      `${name}'s machine ${id} failed to start (${printable(after.state, { maxLength: 32 })}${
        typeof why === "string" ? `: ${printable(why, { maxLength: 300 })}` : ""
      })`,
      `see \`fly machine status ${id} -a ${vault.app}\` and its logs; try again, or ask the admin`,
    );
  }
  const ms = Math.round(performance.now() - started);
  if (flags.json) {
    console.log(JSON.stringify({ vault: name, machine_id: machineId, from, ms }));
  } else say(`${name} is started (was ${from}; ${ms} ms)`);
  return 0;
}

/** The admin client's hints name admin flags; say what to check in the client's terms. */
function clientHint(err: unknown, name: string, app: string): unknown {
  if (!isVaultError(err)) return err;
  const hint = err.code === "fly.unauthorized"
    ? `FLY_API_TOKEN must be a Fly API token that may start machines of app ${app}`
    : err.code === "fly.not_found"
    ? `check app and machine_id of [vault.${name}] in config.toml`
    : err.hint;
  return new VaultError(err.code, err.message, hint, { cause: err });
}

/**
 * Runs `connect` (status, …) and, if the vault has not answered within
 * `afterMs`, says on stderr that it may be suspended or stopped and waking;
 * a timeout gets a hint on how to wake it.
 */
export async function withWakingNotice<T>(
  name: string,
  flags: GlobalFlags,
  connect: () => Promise<T>,
  afterMs = 2_000,
): Promise<T> {
  const timer = setTimeout(() => {
    if (flags.json) return;
    console.error(
      `fly-vault: ${name} has not answered in ${afterMs / 1000} s: it may be suspended or ` +
        `stopped and waking (through vault-proxy it wakes by itself)…`,
    );
  }, afterMs);
  try {
    return await connect();
  } catch (err) {
    // No answer at all (handshake unanswered) or not in time: a suspended or stopped machine.
    // A refusal that gave its reason (vault-proxy's CONNECTION_CLOSE: busy, unknown machine, …)
    // is about something else, and its own words say what.
    if (
      isVaultError(err) &&
      (err.code === "transport.timeout" ||
        (err.code === "transport.unreachable" && !/aborted by peer/.test(err.message)))
    ) {
      throw new VaultError(
        err.code,
        `${err.message}: the vault may be suspended or stopped`,
        `through vault-proxy it wakes on connect: try again. Reached directly (6PN), nobody ` +
          `wakes it: FLY_API_TOKEN=… fly-vault wake ${name} (or connect --wake)`,
        { cause: err },
      );
    }
    throw err;
  } finally {
    clearTimeout(timer);
  }
}
