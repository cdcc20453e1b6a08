/**
 * `fly-vault config add NAME --address … --org … --app … [--machine-id …]`:
 * writes a `[vault.NAME]` table into config.toml. The access token comes from
 * a hidden prompt on a terminal, else from stdin (never from the command line,
 * where `ps` and shell history would see it); the file is kept 0600. An
 * existing vault is replaced only with `--force`.
 *
 * @module
 */
import { dirname } from "node:path";
import { VaultError } from "../errors/mod.ts";
import { configPath, loadConfig, mapSource, VaultConfig } from "./config.ts";

/** What `config add` was given. */
export interface ConfigAddOptions {
  config?: string;
  address: string;
  org: string;
  app: string;
  machineId?: string;
  force?: boolean;
}

/** Reads the token: a prompt with echo off on a terminal, else all of stdin. */
async function readToken(): Promise<string> {
  if (Deno.stdin.isTerminal()) {
    Deno.stderr.writeSync(new TextEncoder().encode("access token (not echoed): "));
    Deno.stdin.setRaw(true);
    const bytes: number[] = [];
    const buf = new Uint8Array(256);
    try {
      read: for (;;) {
        const n = await Deno.stdin.read(buf);
        if (n === null) break;
        for (const b of buf.subarray(0, n)) {
          if (b === 0x0d || b === 0x0a || b === 0x04) break read;
          if (b === 0x03) throw new VaultError("usage.cancelled", "cancelled", "");
          if (b === 0x7f || b === 0x08) bytes.pop();
          else bytes.push(b);
        }
      }
    } finally {
      Deno.stdin.setRaw(false);
      Deno.stderr.writeSync(new TextEncoder().encode("\n"));
    }
    return new TextDecoder().decode(new Uint8Array(bytes)).trim();
  }
  return (await new Response(Deno.stdin.readable).text()).trim();
}

const tomlString = (s: string) => JSON.stringify(s);

/** Removes the `[vault.NAME]` table (header to the next table) from `text`. */
function withoutTable(text: string, name: string): string {
  const start = mapSource(text).tables.get(name);
  if (!start) return text;
  const lines = text.split("\n");
  let end = start.line;
  while (end < lines.length && !/^\s*\[/.test(lines[end])) end++;
  lines.splice(start.line - 1, end - start.line + 1);
  return lines.join("\n");
}

/** `fly-vault config add`: resolves to the exit status. */
export async function configAddCommand(name: string, opts: ConfigAddOptions): Promise<number> {
  if (!/^[A-Za-z0-9_-]+$/.test(name)) {
    throw new VaultError(
      "usage.bad_vault_name",
      `'${name}' is not a vault name`,
      "use letters, digits, - and _",
    );
  }
  const path = configPath(opts.config);
  let text = "";
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  if (text !== "") {
    const existing = await loadConfig(path);
    if (existing.vaults[name] && !opts.force) {
      throw new VaultError(
        "config.vault_exists",
        `${path} already has a [vault.${name}] table`,
        `add --force to replace it, or choose another name`,
      );
    }
  }
  const token = await readToken();
  if (token === "") {
    throw new VaultError(
      "config.no_access_token",
      "no access token given",
      "type it at the prompt, or pipe it in: fly-vault config add NAME … < token-file",
    );
  }
  const table = {
    address: opts.address,
    org: opts.org,
    app: opts.app,
    ...(opts.machineId ? { machine_id: opts.machineId } : {}),
    access_token: token,
  };
  const checked = VaultConfig.safeParse(table);
  if (!checked.success) {
    const issue = checked.error.issues[0];
    throw new VaultError(
      "usage.bad_value",
      `--${String(issue.path[0]).replace("_", "-")}: ${issue.message}`,
      "fly-vault config add --help shows an example",
    );
  }
  const body = [
    `[vault.${name}]`,
    ...Object.entries(table).map(([k, v]) => `${k} = ${tomlString(v)}`),
  ].join("\n");
  let rest = opts.force ? withoutTable(text, name) : text;
  rest = rest.replace(/\s*$/, "");
  const out = (rest ? rest + "\n\n" : "") + body + "\n";
  await Deno.mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const tmp = `${path}.${Deno.pid}.tmp`;
  await Deno.writeTextFile(tmp, out, { mode: 0o600 });
  await Deno.chmod(tmp, 0o600);
  try {
    // The result must load: a table that would break the file is never written over it.
    await loadConfig(tmp);
    await Deno.rename(tmp, path);
  } catch (err) {
    await Deno.remove(tmp).catch(() => {});
    throw err;
  }
  console.error(`wrote [vault.${name}] to ${path} (mode 0600)`);
  return 0;
}
