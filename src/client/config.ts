/**
 * The client's configuration: `config.toml` exactly as in the original
 * README (`[vault.NAME]` tables), plus `oidc_issuer` and `local_simulation`
 * for flysim. Every mistake is reported with the file, line and column, or
 * the vault and key, and a hint.
 *
 * Where it lives, first match wins: `--config FILE`; `$FLY_VAULT_CONFIG_DIR`;
 * `$XDG_CONFIG_HOME/fly-vault`; `~/.config/fly-vault`. `known_vaults` sits
 * beside `config.toml`.
 *
 * @module
 */
import { dirname, join, resolve } from "node:path";
import { homedir } from "node:os";
import { parse, TomlError } from "smol-toml";
import { z } from "zod";
import { VaultError } from "../errors/mod.ts";

/** Default OIDC issuer base: Fly's. The org is appended: `https://oidc.fly.io/<org>`. */
export const FLY_OIDC_ISSUER = "https://oidc.fly.io";

const Forward = z.string().regex(
  /^(?:[^:]+:)?\d{1,5}:[^:]+:\d{1,5}$|^(?:\[[^\]]+\]:)?\d{1,5}:\[[^\]]+\]:\d{1,5}$/,
  "forward must be LPORT:HOST:RPORT or BIND:LPORT:HOST:RPORT",
);

/** One `[vault.NAME]` table. */
export const VaultConfig = z.strictObject({
  address: z.string().min(3),
  org: z.string().min(1).regex(/^[a-z0-9-]+$/, "org is the org slug: lowercase, digits, dashes"),
  app: z.string().min(1),
  machine_id: z.string().regex(/^[a-z0-9]+$/, "machine_id is lowercase hex/letters").optional(),
  access_token: z.string().min(1).optional(),
  forward: z.array(Forward).default([]),
  rootfs: z.string().min(1).optional(),
  rootfs_url: z.string().url().optional(),
  oidc_issuer: z.string().url().default(FLY_OIDC_ISSUER),
  local_simulation: z.boolean().default(false),
  /** Keep a master connection this long after the last command ("10m", "30s", "no"). */
  persist: z.union([z.string(), z.boolean()]).optional(),
});
export type VaultConfig = z.infer<typeof VaultConfig>;

const ConfigFile = z.object({
  vault: z.record(z.string(), z.unknown()).default({}),
  persist: z.union([z.string(), z.boolean()]).optional(),
}).loose();

/** A loaded configuration. */
export interface ClientConfig {
  /** The config.toml path (it may not exist). */
  path: string;
  /** The directory holding config.toml and known_vaults. */
  dir: string;
  knownVaultsPath: string;
  vaults: Record<string, VaultConfig>;
  /** The top-level `persist` (every vault's default). */
  persist?: string | boolean;
}

/**
 * How long a master lingers after its last client when `persist` is not set,
 * or set to yes without a duration (ssh's ControlPersist=yes is forever; we bound it).
 */
export const DEFAULT_PERSIST_MS = 10 * 60_000;

/**
 * A `persist` value as milliseconds: 0 means off. Accepts `"no"`/`false`,
 * `"yes"`/`true` (10 minutes), or a duration: `"90s"`, `"10m"`, `"2h"`, `"500ms"`, `"30"` (seconds).
 */
export function parsePersist(value: string | boolean | undefined, where = "persist"): number {
  if (value === undefined || value === false) return 0;
  if (value === true) return DEFAULT_PERSIST_MS;
  const v = value.trim().toLowerCase();
  if (["no", "off", "false", "0"].includes(v)) return 0;
  if (["yes", "on", "true"].includes(v)) return DEFAULT_PERSIST_MS;
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)?$/.exec(v);
  if (!m) {
    throw new VaultError(
      "config.bad_persist",
      `${where} = "${value}" is not a duration`,
      'write persist = "10m" (or "30s", "2h", "no")',
    );
  }
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[(m[2] ?? "s") as "ms" | "s" | "m" | "h"];
  return Math.round(Number(m[1]) * unit);
}

/** The persist time for `name`: its own key, else the top-level one, else 10 minutes. */
export function persistMsOf(config: ClientConfig, name: string, vault: VaultConfig): number {
  if (vault.persist !== undefined) return parsePersist(vault.persist, `[vault.${name}] persist`);
  if (config.persist !== undefined) return parsePersist(config.persist, "persist");
  return DEFAULT_PERSIST_MS;
}

/** Where config.toml is, from the flag and the environment. */
export function configPath(flag?: string): string {
  if (flag) return resolve(flag);
  const env = Deno.env.get("FLY_VAULT_CONFIG_DIR");
  if (env) return join(env, "config.toml");
  const xdg = Deno.env.get("XDG_CONFIG_HOME");
  return join(xdg || join(homedir(), ".config"), "fly-vault", "config.toml");
}

/** Expands a leading `~/`. */
export function expandHome(path: string): string {
  return path === "~" || path.startsWith("~/") ? join(homedir(), path.slice(1)) : path;
}

/** Loads and validates config.toml. A missing file is an empty config. */
export async function loadConfig(flag?: string): Promise<ClientConfig> {
  const path = configPath(flag);
  const dir = dirname(path);
  let text = "";
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) {
      throw new VaultError(
        "config.unreadable",
        `cannot read ${path}: ${(err as Error).message}`,
        "check the file's permissions",
      );
    }
  }
  let raw: unknown;
  try {
    raw = parse(text);
  } catch (err) {
    if (err instanceof TomlError) {
      const first = err.message.split("\n")[0];
      throw new VaultError(
        "config.syntax",
        `${path}:${err.line}:${err.column}: ${first}`,
        "fix the TOML at that line; strings need quotes, tables look like [vault.NAME]",
      );
    }
    throw err;
  }
  const file = ConfigFile.parse(raw);
  const vaults: Record<string, VaultConfig> = {};
  for (const [name, table] of Object.entries(file.vault)) {
    const parsed = VaultConfig.safeParse(table);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      const key = issue.path.join(".") || "(table)";
      const unknown = issue.code === "unrecognized_keys"
        ? ` (unknown key${issue.keys.length > 1 ? "s" : ""}: ${issue.keys.join(", ")})`
        : "";
      throw new VaultError(
        "config.invalid",
        `${path}: [vault.${name}] ${key}: ${issue.message}${unknown}`,
        "keys are address, org, app, machine_id, access_token, forward, rootfs, rootfs_url, " +
          "oidc_issuer, local_simulation, persist",
      );
    }
    const v = parsed.data;
    if (!v.oidc_issuer.startsWith("https://") && !v.local_simulation) {
      throw new VaultError(
        "config.insecure_issuer",
        `[vault.${name}] oidc_issuer ${v.oidc_issuer} is not https`,
        "only a local simulation may use a plain-http issuer: add local_simulation = true",
      );
    }
    parsePersist(v.persist, `${path}: [vault.${name}] persist`);
    vaults[name] = v;
  }
  parsePersist(file.persist, `${path}: persist`);
  if (Object.values(vaults).some((v) => v.access_token !== undefined)) {
    await refuseLooseSecrets(path);
  }
  return { path, dir, knownVaultsPath: join(dir, "known_vaults"), vaults, persist: file.persist };
}

/**
 * A config holding an access token must be readable and writable by us alone,
 * as ssh refuses a private key others can read (StrictModes).
 */
async function refuseLooseSecrets(path: string): Promise<void> {
  const stat = await Deno.stat(path);
  const uid = Deno.uid();
  const mode = stat.mode === null ? 0 : stat.mode & 0o777;
  const octal = "0" + mode.toString(8).padStart(3, "0");
  if ((mode & 0o077) !== 0) {
    throw new VaultError(
      "config.loose_mode",
      `${path} holds an access token and is mode ${octal}: others on this computer can ` +
        `${mode & 0o022 ? "change" : "read"} it`,
      `chmod 600 ${path}`,
    );
  }
  if (uid !== null && stat.uid !== null && stat.uid !== uid && stat.uid !== 0) {
    throw new VaultError(
      "config.loose_mode",
      `${path} holds an access token and belongs to uid ${stat.uid}, not you`,
      `chown ${uid} ${path}`,
    );
  }
}

/** The named vault, or an error listing the ones there are. */
export function getVault(config: ClientConfig, name: string): VaultConfig {
  const vault = config.vaults[name];
  if (vault) return vault;
  const names = Object.keys(config.vaults);
  throw new VaultError(
    "config.unknown_vault",
    `no vault named '${name}' in ${config.path}`,
    names.length
      ? `configured vaults: ${names.join(", ")}`
      : `add a [vault.${name}] table with address, org, app and access_token`,
  );
}

/** The vault's access token, or an error saying where to put it. */
export function accessTokenOf(name: string, vault: VaultConfig): string {
  const fromEnv = Deno.env.get("FLY_VAULT_ACCESS_TOKEN");
  if (fromEnv) return fromEnv;
  if (vault.access_token) return vault.access_token;
  throw new VaultError(
    "config.no_access_token",
    `vault '${name}' has no access_token`,
    `add access_token = "…" to [vault.${name}], or set FLY_VAULT_ACCESS_TOKEN`,
  );
}
