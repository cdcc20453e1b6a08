/**
 * Port-forward specs, as ssh -L writes them: `LPORT:HOST:RPORT` or
 * `BIND:LPORT:HOST:RPORT`. IPv6 addresses go in brackets (`[::1]:8080:…`).
 * The local side binds 127.0.0.1 unless told otherwise, like ssh.
 *
 * @module
 */
import { VaultError } from "../errors/mod.ts";

/** One parsed forward. */
export interface ForwardSpec {
  bind: string;
  localPort: number;
  /** Host as seen from the VM. */
  host: string;
  remotePort: number;
}

function splitSpec(spec: string): string[] {
  const parts: string[] = [];
  let i = 0;
  while (i <= spec.length) {
    if (spec[i] === "[") {
      const close = spec.indexOf("]", i);
      if (close < 0) throw bad(spec, "unclosed '['");
      parts.push(spec.slice(i + 1, close));
      i = close + 1;
      if (i < spec.length && spec[i] !== ":") throw bad(spec, "expected ':' after ']'");
      i++;
      continue;
    }
    const next = spec.indexOf(":", i);
    const end = next < 0 ? spec.length : next;
    parts.push(spec.slice(i, end));
    i = end + 1;
  }
  return parts;
}

function bad(spec: string, why: string): VaultError {
  return new VaultError(
    "forward.bad_spec",
    `invalid forward ${JSON.stringify(spec)}: ${why}`,
    "write LPORT:HOST:RPORT or BIND:LPORT:HOST:RPORT, e.g. 8080:localhost:80",
  );
}

function port(spec: string, text: string, what: string, allowZero = false): number {
  if (!/^\d{1,5}$/.test(text)) throw bad(spec, `${what} ${JSON.stringify(text)} is not a number`);
  const n = Number(text);
  if (n > 65535 || (n === 0 && !allowZero)) throw bad(spec, `${what} ${n} is out of range`);
  return n;
}

/** Parses one spec; throws `forward.bad_spec` with the reason. Local port 0 picks a free port. */
export function parseForwardSpec(spec: string): ForwardSpec {
  const parts = splitSpec(spec.trim());
  if (parts.length !== 3 && parts.length !== 4) {
    throw bad(spec, `expected 3 or 4 ':'-separated parts, got ${parts.length}`);
  }
  const [bind, lport, host, rport] = parts.length === 4 ? parts : ["127.0.0.1", ...parts];
  if (!host) throw bad(spec, "the remote host is empty");
  if (!/^[A-Za-z0-9._:%-]+$/.test(host)) throw bad(spec, `bad host ${JSON.stringify(host)}`);
  return {
    bind: bind === "" || bind === "localhost" ? "127.0.0.1" : bind === "*" ? "0.0.0.0" : bind,
    localPort: port(spec, lport, "local port", true),
    host,
    remotePort: port(spec, rport, "remote port"),
  };
}

/** Parses `HOST:PORT` (pipe target); `[v6]:PORT` for IPv6. */
export function parseHostPort(text: string): { host: string; port: number } {
  const parts = splitSpec(text.trim());
  if (parts.length !== 2 || !parts[0]) {
    throw new VaultError(
      "forward.bad_target",
      `invalid target ${JSON.stringify(text)}: expected HOST:PORT`,
      "e.g. localhost:2222",
    );
  }
  const p = Number(parts[1]);
  if (!/^\d{1,5}$/.test(parts[1]) || p < 1 || p > 65535) {
    throw new VaultError(
      "forward.bad_target",
      `invalid port in ${JSON.stringify(text)}`,
      "1–65535",
    );
  }
  return { host: parts[0], port: p };
}
