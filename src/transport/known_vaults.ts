/**
 * `~/.config/fly-vault/known_vaults`: one pinned identity per vault, like
 * ssh's known_hosts but re-earned by attestation, never by a prompt. An
 * entry is replaced only after a fresh successful attestation. Mode 0600;
 * written atomically so a crash never leaves half a file.
 *
 * Format (v2), one line per vault, fields separated by one space:
 *
 *     <name> <address> v2 org=<org> app=<app> issuer=<oidc_issuer> machine=<machine_id> identity=<base64 DER>
 *
 * It records what was attested: the pin is used only while the config asks
 * for the same org, app, issuer and address (and machine_id, when set), and
 * a later attestation of another machine under the same name is refused
 * (`attest.machine_changed`). Values escape `%`, whitespace and controls as
 * `%XX`. Lines of the old format (`<name> <address> <base64>`), broken lines
 * and entries that are not a fly-vault identity are read as "no pin": the
 * next connect attests and rewrites them.
 *
 * Like ssh's StrictModes, a file or directory others can write is refused.
 *
 * @module
 */
import { dirname } from "node:path";
import { VaultError } from "../errors/mod.ts";
import { identityDerProblem } from "../pki/mod.ts";

/** One pinned identity and what it was attested for. */
export interface KnownVault {
  name: string;
  address: string;
  org: string;
  app: string;
  /** The configured `oidc_issuer` base. */
  issuer: string;
  /** The machine id the attestation named. */
  machineId: string;
  identityDer: Uint8Array<ArrayBuffer>;
}

const VERSION = "v2";
const KEYS = ["org", "app", "issuer", "machine", "identity"] as const;

function b64(bytes: Uint8Array): string {
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin);
}

function escape(value: string): string {
  return value.replace(
    // deno-lint-ignore no-control-regex
    /[%\s\x00-\x1f\x7f]/g,
    (c) => `%${c.charCodeAt(0).toString(16).padStart(2, "0").toUpperCase()}`,
  );
}

function unescape(value: string): string {
  return value.replace(/%([0-9A-F]{2})/g, (_, h) => String.fromCharCode(parseInt(h, 16)));
}

/** One line as a pin, or undefined for anything else (comments, old format, broken, invalid). */
function parseLine(line: string): KnownVault | undefined {
  const fields = line.split(" ");
  if (fields.length !== 3 + KEYS.length || fields[2] !== VERSION) return undefined;
  const values: Partial<Record<(typeof KEYS)[number], string>> = {};
  for (const [i, key] of KEYS.entries()) {
    const f = fields[3 + i];
    if (!f.startsWith(`${key}=`) || f.length === key.length + 1) return undefined;
    values[key] = f.slice(key.length + 1);
  }
  let identityDer: Uint8Array<ArrayBuffer>;
  try {
    identityDer = Uint8Array.from(atob(values.identity!), (c) => c.charCodeAt(0));
  } catch {
    return undefined;
  }
  if (identityDerProblem(identityDer) !== undefined) return undefined;
  return {
    name: unescape(fields[0]),
    address: unescape(fields[1]),
    org: unescape(values.org!),
    app: unescape(values.app!),
    issuer: unescape(values.issuer!),
    machineId: unescape(values.machine!),
    identityDer,
  };
}

function formatLine(v: KnownVault): string {
  return [
    escape(v.name),
    escape(v.address),
    VERSION,
    `org=${escape(v.org)}`,
    `app=${escape(v.app)}`,
    `issuer=${escape(v.issuer)}`,
    `machine=${escape(v.machineId)}`,
    `identity=${b64(v.identityDer)}`,
  ].join(" ");
}

function octal(mode: number): string {
  return "0" + (mode & 0o777).toString(8).padStart(3, "0");
}

/** Refuses `path` when someone other than us (or root) could change it, as ssh's StrictModes. */
async function checkWritableOnlyByUs(path: string, what: "file" | "directory"): Promise<void> {
  let stat: Deno.FileInfo;
  try {
    stat = await Deno.stat(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return;
    throw err;
  }
  const uid = Deno.uid();
  const foreign = uid !== null && stat.uid !== null && stat.uid !== uid && stat.uid !== 0;
  const loose = stat.mode !== null && (stat.mode & 0o022) !== 0;
  if (!foreign && !loose) return;
  throw new VaultError(
    "known_vaults.loose_mode",
    `${path} (the ${what} holding your pinned vault identities) ${
      loose
        ? `is mode ${octal(stat.mode!)}: others on this computer can change which machine you trust`
        : `belongs to uid ${stat.uid}, not you`
    }`,
    loose
      ? (what === "file" ? `chmod 600 ${path}` : `chmod 700 ${path}`)
      : `chown ${uid} ${path}, or remove it (fly-vault attests again)`,
  );
}

async function checkModes(path: string): Promise<void> {
  await checkWritableOnlyByUs(dirname(path), "directory");
  await checkWritableOnlyByUs(path, "file");
}

/**
 * Reads all valid entries; a missing file is empty. Broken, old-format and
 * invalid entries are left out (that vault attests again). Refuses a file or
 * directory others can write.
 */
export async function readKnownVaults(path: string): Promise<KnownVault[]> {
  await checkModes(path);
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return [];
    throw new VaultError(
      "known_vaults.unreadable",
      `cannot read ${path}: ${(err as Error).message}`,
      "check its permissions, or remove it (fly-vault attests again)",
    );
  }
  const out: KnownVault[] = [];
  for (const line of text.split("\n")) {
    const v = parseLine(line.trim());
    if (v) out.push(v);
  }
  return out;
}

/** The pin for vault `name`, if there is a valid one (whatever it was attested for). */
export async function lookupKnownVault(
  path: string,
  name: string,
): Promise<KnownVault | undefined> {
  return (await readKnownVaults(path)).find((v) => v.name === name);
}

async function writeAll(path: string, vaults: KnownVault[]): Promise<void> {
  await Deno.mkdir(dirname(path), { recursive: true, mode: 0o700 });
  await checkModes(path);
  const tmp = `${path}.tmp-${Deno.pid}`;
  const body = "# fly-vault pinned machine identities; entries are replaced only by attestation\n" +
    vaults.map((v) => formatLine(v) + "\n").join("");
  const file = await Deno.open(tmp, { write: true, create: true, truncate: true, mode: 0o600 });
  try {
    await file.write(new TextEncoder().encode(body));
    await file.sync();
  } finally {
    file.close();
  }
  await Deno.chmod(tmp, 0o600);
  await Deno.rename(tmp, path);
}

/** Replaces (or adds) the entry for `vault.name`, atomically, mode 0600. */
export async function rememberKnownVault(path: string, vault: KnownVault): Promise<void> {
  const rest = (await readKnownVaults(path)).filter((v) => v.name !== vault.name);
  await writeAll(path, [...rest, vault]);
}

/**
 * Removes the entry for `name` (`fly-vault forget`). Returns false when
 * there was no such line at all (valid or not).
 */
export async function forgetKnownVault(path: string, name: string): Promise<boolean> {
  await checkModes(path);
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
  // Any line naming the vault goes, in whatever format it is.
  const named = text.split("\n").some((l) => l.trim().split(" ")[0] === escape(name));
  if (!named) return false;
  const rest = (await readKnownVaults(path)).filter((v) => v.name !== name);
  await writeAll(path, rest);
  return true;
}
