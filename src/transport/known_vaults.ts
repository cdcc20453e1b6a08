/**
 * `~/.config/fly-vault/known_vaults`: one pinned identity per vault, like
 * ssh's known_hosts but re-earned by attestation, never by a prompt. An
 * entry is replaced only after a fresh successful attestation. Mode 0600;
 * written atomically so a crash never leaves half a file.
 *
 * Format, one line per vault: `<vault-name> <address> <base64 identity DER>`.
 *
 * @module
 */
import { dirname } from "node:path";

/** One pinned identity. */
export interface KnownVault {
  name: string;
  address: string;
  identityDer: Uint8Array<ArrayBuffer>;
}

const LINE = /^(\S+) (\S+) ([A-Za-z0-9+/=]+)$/;

function b64(bytes: Uint8Array): string {
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin);
}

/** Reads all entries; a missing file is empty, a malformed line is ignored (it just re-attests). */
export async function readKnownVaults(path: string): Promise<KnownVault[]> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return [];
    throw err;
  }
  const out: KnownVault[] = [];
  for (const line of text.split("\n")) {
    const m = LINE.exec(line.trim());
    if (!m) continue;
    try {
      out.push({
        name: m[1],
        address: m[2],
        identityDer: Uint8Array.from(atob(m[3]), (c) => c.charCodeAt(0)),
      });
    } catch {
      // Bad base64: treat as absent; the next connect attests and rewrites it.
    }
  }
  return out;
}

/** The pinned identity for `name` at `address`, if any. */
export async function lookupKnownVault(
  path: string,
  name: string,
  address: string,
): Promise<KnownVault | undefined> {
  return (await readKnownVaults(path)).find((v) => v.name === name && v.address === address);
}

async function writeAll(path: string, vaults: KnownVault[]): Promise<void> {
  const lines = vaults.map((v) => `${v.name} ${v.address} ${b64(v.identityDer)}`);
  await Deno.mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const tmp = `${path}.tmp-${Deno.pid}`;
  const body = "# fly-vault pinned machine identities; entries are replaced only by attestation\n" +
    lines.map((l) => l + "\n").join("");
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

/** Removes the entry for `name` (used when a pin is found stale). */
export async function forgetKnownVault(path: string, name: string): Promise<void> {
  const all = await readKnownVaults(path);
  const rest = all.filter((v) => v.name !== name);
  if (rest.length !== all.length) await writeAll(path, rest);
}
