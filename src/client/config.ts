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
import { parseAddress } from "../transport/mod.ts";

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

/** The keys a `[vault.NAME]` table may hold, in the order the hint lists them. */
export const VAULT_KEYS = Object.keys(VaultConfig.shape);

/** Where a table or key was written: 1-based line and column. */
export interface Position {
  line: number;
  column: number;
}

/** Where each `[vault.NAME]` table and each of its keys sit in the source text. */
export interface SourceMap {
  tables: Map<string, Position>;
  keys: Map<string, Map<string, Position>>;
  /** Top-level keys and the first name of other tables (`[valut.x]` → `valut`). */
  top: Map<string, Position>;
}

function unquote(s: string): string {
  const t = s.trim();
  if (t.length >= 2 && (t[0] === '"' || t[0] === "'") && t.at(-1) === t[0]) return t.slice(1, -1);
  return t;
}

/**
 * Finds the line of each `[vault.NAME]` header and each `key =` below it by
 * scanning the text (smol-toml reports values, not positions). Only used for
 * messages, so the simple forms people write are enough: dotted and quoted
 * table names, bare and quoted keys.
 */
export function mapSource(text: string): SourceMap {
  const tables = new Map<string, Position>();
  const keys = new Map<string, Map<string, Position>>();
  const top = new Map<string, Position>();
  let current: string | null = null;
  let atTop = true;
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    const header = /^(\s*)\[\s*vault\s*\.\s*("[^"]*"|'[^']*'|[A-Za-z0-9_-]+)\s*\]/.exec(line);
    if (header) {
      current = unquote(header[2]);
      atTop = false;
      tables.set(current, { line: i + 1, column: header[1].length + 1 });
      if (!keys.has(current)) keys.set(current, new Map());
      continue;
    }
    const other = /^(\s*)\[+\s*("[^"]*"|'[^']*'|[A-Za-z0-9_-]+)/.exec(line);
    if (other) {
      const name = unquote(other[2]);
      if (!top.has(name)) top.set(name, { line: i + 1, column: other[1].length + 1 });
      current = null;
      atTop = false;
      continue;
    }
    const key = /^(\s*)("[^"]*"|'[^']*'|[A-Za-z0-9_-]+)\s*=/.exec(line);
    if (key && atTop) {
      const k = unquote(key[2]);
      if (!top.has(k)) top.set(k, { line: i + 1, column: key[1].length + 1 });
    } else if (key && current !== null) {
      const k = unquote(key[2]);
      const m = keys.get(current)!;
      if (!m.has(k)) m.set(k, { line: i + 1, column: key[1].length + 1 });
    }
  }
  return { tables, keys, top };
}

/** Levenshtein distance, for "did you mean". */
export function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length];
}

/** The known key closest to `key`, when it is close enough to be a slip. */
export function closestKey(key: string, known: readonly string[] = VAULT_KEYS): string | null {
  let best: string | null = null;
  let bestD = Infinity;
  for (const k of known) {
    const d = editDistance(key.toLowerCase(), k);
    if (d < bestD) [best, bestD] = [k, d];
  }
  return best !== null && bestD <= Math.max(2, Math.floor(key.length / 3)) ? best : null;
}

function at(path: string, pos: Position | undefined): string {
  return pos ? `${path}:${pos.line}:${pos.column}` : path;
}

/** Loads and validates config.toml. A missing file is an empty config, unless it was named with `--config`. */
export async function loadConfig(flag?: string): Promise<ClientConfig> {
  const path = configPath(flag);
  const dir = dirname(path);
  let text = "";
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound && flag) {
      throw new VaultError(
        "config.unreadable",
        `cannot open ${path}: no such file`,
        "--config names a file that must exist; without --config the default config.toml is used " +
          "(fly-vault config add NAME … writes one)",
      );
    }
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
  const source = mapSource(text);
  // A misspelt table ([valut.demo]) or a vault key outside its table would otherwise be
  // ignored, and the vault reported as missing.
  for (const key of Object.keys(raw as Record<string, unknown>)) {
    if (key === "vault" || key === "persist") continue;
    const pos = source.top.get(key);
    const table = text.split("\n")[(pos?.line ?? 0) - 1]?.trimStart().startsWith("[");
    throw new VaultError(
      "config.unknown_key",
      `${at(path, pos)}: unknown ${table ? "table" : "key"} '${key}'`,
      VAULT_KEYS.includes(key)
        ? `${key} belongs in a [vault.NAME] table: move it below that table's header`
        : closestKey(key, ["vault", "persist"]) === "vault"
        ? "did you mean [vault.NAME]?"
        : closestKey(key, ["vault", "persist"]) === "persist"
        ? "did you mean 'persist'?"
        : "the top level holds [vault.NAME] tables and persist",
    );
  }
  const vaults: Record<string, VaultConfig> = {};
  for (const [name, table] of Object.entries(file.vault)) {
    const tablePos = source.tables.get(name);
    const keyPos = (k: string) => source.keys.get(name)?.get(k) ?? tablePos;
    const parsed = VaultConfig.safeParse(table);
    if (!parsed.success) {
      // A misspelt key also makes the real one missing: name the misspelling first.
      const issue = parsed.error.issues.find((i) => i.code === "unrecognized_keys") ??
        parsed.error.issues[0];
      if (issue.code === "unrecognized_keys") {
        const key = issue.keys[0];
        const near = closestKey(key);
        throw new VaultError(
          "config.unknown_key",
          `${at(path, keyPos(key))}: [vault.${name}] has an unknown key '${key}'` +
            (issue.keys.length > 1 ? ` (and ${issue.keys.slice(1).join(", ")})` : ""),
          near ? `did you mean '${near}'?` : `keys are ${VAULT_KEYS.join(", ")}`,
        );
      }
      const key = String(issue.path[0] ?? "");
      const missing = key !== "" && (table as Record<string, unknown>)?.[key] === undefined;
      if (missing) {
        throw new VaultError(
          "config.missing_key",
          `${at(path, tablePos)}: [vault.${name}] has no '${key}'`,
          `add ${key} = "…" to the [vault.${name}] table` +
            (key === "address" ? ' (e.g. address = "[fdaa:0:1::2]:8443")' : ""),
        );
      }
      throw new VaultError(
        "config.invalid",
        `${at(path, keyPos(key))}: [vault.${name}] ${key || "(table)"}: ${issue.message}`,
        `fix the value of ${key || "the table"}`,
      );
    }
    const v = parsed.data;
    try {
      parseAddress(v.address);
    } catch (err) {
      if (!(err instanceof VaultError)) throw err;
      throw new VaultError(
        "config.bad_address",
        `${at(path, keyPos("address"))}: [vault.${name}] address = "${v.address}" is not host:port`,
        err.hint,
      );
    }
    if (!v.oidc_issuer.startsWith("https://") && !v.local_simulation) {
      throw new VaultError(
        "config.insecure_issuer",
        `${
          at(path, keyPos("oidc_issuer"))
        }: [vault.${name}] oidc_issuer ${v.oidc_issuer} is not https`,
        "only a local simulation may use a plain-http issuer: add local_simulation = true",
      );
    }
    parsePersist(v.persist, `${at(path, keyPos("persist"))}: [vault.${name}] persist`);
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
