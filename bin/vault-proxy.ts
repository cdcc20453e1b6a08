/**
 * vault-proxy: one public UDP address for many fly-vault tenant machines.
 * Routes each QUIC client to the machine named by its TLS server name
 * (`<machine_id>.vault.internal`), read from the client's Initial packets;
 * never terminates TLS.
 */
import { Command, CommanderError } from "commander";
import { commanderExit, ourUsageErrors } from "../src/errors/cli.ts";
import { checkApiBase } from "../src/admin/mod.ts";
import { formatError, VaultError } from "../src/errors/mod.ts";
import {
  DEFAULT_LIMITS,
  machinesApiResolver,
  type Resolver,
  resolveUdpImpl,
  runProxy,
  type RunProxyOptions,
  splitHostPort,
  templateResolver,
  UDP_IMPLS,
  type UdpImpl,
  withApiFallback,
} from "../src/proxy/mod.ts";

const program = new Command("vault-proxy")
  .description(
    "Relay QUIC from one public UDP address to fly-vault tenant machines, choosing the machine " +
      "by the server name the client asks for (<machine_id>.vault.internal). TLS is not " +
      "terminated: the proxy sees only the ClientHello, and clients pin their machine's key.",
  )
  .option(
    "--listen <host:port>",
    "public UDP address. On Fly, UDP must be received on fly-global-services at the public " +
      "port (Fly rewrites addresses, not ports); elsewhere e.g. 127.0.0.1:4433",
    "fly-global-services:443",
  )
  .option(
    "--backend <template>",
    "machine address template, resolved by DNS (AAAA first). On Fly: " +
      "'{machine_id}.vm.vault-tenants.internal:8443'",
  )
  .option("--machines-api <url>", "resolve machines through the Machines API instead (flysim too)")
  .option(
    "--app <name>",
    "the app machines must belong to: with --machines-api always; with --backend it turns on " +
      "waking through the Machines API (--api-base) for names DNS does not know",
  )
  .option(
    "--api-base <url>",
    "with --backend and --app: the Machines API that wakes machines",
    "https://api.machines.dev",
  )
  .option(
    "--no-wake",
    "do not start stopped or suspended machines; their clients get a CONNECTION_CLOSE saying so",
  )
  .option("--wake-timeout <ms>", "longest a machine may take to start for a client", "30000")
  .option("--admin <host:port>", "serve /healthz and /metrics here (e.g. 0.0.0.0:9090)")
  .option(
    "--udp <impl>",
    "UDP data path: mmsg (batched recvmmsg/sendmmsg through FFI, Linux), deno or node (one " +
      "datagram per call); auto is mmsg where FFI is permitted, else deno",
    "auto",
  )
  .option(
    "--max-sessions <n>",
    "sessions at once (lowered to fit the open-file limit: one socket each)",
    String(DEFAULT_LIMITS.maxSessions),
  )
  .option(
    "--idle-timeout <ms>",
    "close a silent session after",
    String(DEFAULT_LIMITS.idleTimeoutMs),
  )
  .option(
    "--initial-rate <n>",
    "new-client Initial packets per second per source IP",
    String(DEFAULT_LIMITS.initialsPerSecond),
  )
  .option(
    "--max-per-source <n>",
    "sessions at once from one source address (a /24 or /56 gets 8 times this)",
    String(DEFAULT_LIMITS.maxSessionsPerSource),
  )
  .option(
    "--machine-rate <n>",
    "new sessions per second to one machine (burst 4 times this); beyond, refused",
    String(DEFAULT_LIMITS.machineSessionsPerSecond),
  )
  .option("--cache-ttl <ms>", "how long a machine's address is cached", "30000")
  .option(
    "--peer-listen <host:port>",
    "run with other proxies in front of the same machines: this proxy's peer socket, on a " +
      "private address (on Fly its 6PN address, e.g. [fdaa:…]:4434); needs VAULT_PROXY_PEER_SECRET",
  )
  .option(
    "--peer <host:port>",
    "another proxy's peer socket (repeatable)",
    (v: string, prev: string[]) => [...prev, v],
    [] as string[],
  )
  .option(
    "--peers-dns <name:port>",
    "the other proxies by DNS, re-read every 10 s (on Fly: '<proxy-app>.internal:4434')",
  )
  .addHelpText(
    "after",
    "\nEnvironment:\n  FLY_API_TOKEN   Machines API token (never logged): to look machines up (--machines-api)\n" +
      "                  and to wake them. It needs only to read and start the app's machines:\n" +
      "                  e.g. fly tokens create deploy -a APP (app-scoped), better attenuated to\n" +
      "                  machine read + start (see the README).\n" +
      "  VAULT_PROXY_PEER_SECRET  with --peer-listen: a secret (32+ characters) all peers share;\n" +
      "                  it signs every message between them (never logged)\n" +
      "\nExamples:\n" +
      "  On Fly:   vault-proxy --backend '{machine_id}.vm.vault-tenants.internal:8443' --admin 0.0.0.0:9090\n" +
      "  Locally:  vault-proxy --listen 127.0.0.1:4433 --machines-api http://127.0.0.1:4280 --app vault-tenants\n" +
      "\nLogs are JSON lines on stdout. SIGTERM stops cleanly.",
  );
ourUsageErrors(program);
try {
  program.parse();
} catch (err) {
  Deno.exit(err instanceof CommanderError ? commanderExit(err, program, Deno.args) : 1);
}
const o = program.opts<{
  listen: string;
  backend?: string;
  machinesApi?: string;
  app?: string;
  admin?: string;
  udp: string;
  maxSessions: string;
  idleTimeout: string;
  initialRate: string;
  maxPerSource: string;
  machineRate: string;
  cacheTtl: string;
  apiBase: string;
  wake: boolean;
  wakeTimeout: string;
  peerListen?: string;
  peer: string[];
  peersDns?: string;
}>();

function usage(message: string, hint: string): never {
  throw new VaultError("proxy.usage", message, hint);
}

function address(flag: string, value: string) {
  const hp = splitHostPort(value);
  if (!hp) usage(`${flag} ${value} is not host:port`, "e.g. 127.0.0.1:4433 or [::1]:4433");
  return { hostname: hp.host, port: hp.port };
}

function count(flag: string, value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) usage(`${flag} ${value} is not a positive integer`, "");
  return n;
}

try {
  let resolver: Resolver;
  if (o.backend && o.machinesApi) {
    usage("--backend and --machines-api both given", "choose one way to find machines");
  } else if (o.backend) {
    if (!o.backend.includes("{machine_id}")) {
      usage(
        `--backend ${o.backend} lacks {machine_id}`,
        "e.g. '{machine_id}.vm.vault-tenants.internal:8443'",
      );
    }
    resolver = templateResolver(o.backend);
    if (o.app && o.wake) {
      const token = Deno.env.get("FLY_API_TOKEN");
      if (!token) {
        usage(
          "--backend with --app wakes machines, which needs FLY_API_TOKEN",
          "set FLY_API_TOKEN (an app-scoped token that may read and start machines), or --no-wake",
        );
      }
      resolver = withApiFallback(
        resolver,
        machinesApiResolver({
          url: checkApiBase(o.apiBase),
          app: o.app,
          token,
          wake: true,
          wakeTimeoutMs: count("--wake-timeout", o.wakeTimeout),
        }),
      );
    }
  } else if (o.machinesApi) {
    if (!o.app) usage("--machines-api needs --app", "the app whose machines may be reached");
    resolver = machinesApiResolver({
      url: checkApiBase(o.machinesApi, "--machines-api"),
      app: o.app,
      token: Deno.env.get("FLY_API_TOKEN"),
      wake: o.wake,
      wakeTimeoutMs: count("--wake-timeout", o.wakeTimeout),
    });
  } else {
    usage("no way to find machines", "give --backend TEMPLATE or --machines-api URL --app NAME");
  }
  if (!(UDP_IMPLS as readonly string[]).includes(o.udp)) {
    usage(`--udp ${o.udp}`, UDP_IMPLS.join(", "));
  }
  let peers: RunProxyOptions["peers"];
  if (o.peerListen) {
    const secret = Deno.env.get("VAULT_PROXY_PEER_SECRET") ?? "";
    if (secret.length < 32) {
      usage(
        "--peer-listen needs VAULT_PROXY_PEER_SECRET of at least 32 characters",
        "e.g. fly secrets set VAULT_PROXY_PEER_SECRET=$(openssl rand -hex 32) -a <proxy-app>",
      );
    }
    const dns = o.peersDns ? address("--peers-dns", o.peersDns) : undefined;
    peers = {
      listen: address("--peer-listen", o.peerListen),
      addresses: o.peer.map((p) => address("--peer", p)),
      dns: dns ? { name: dns.hostname, port: dns.port } : undefined,
      secret: new TextEncoder().encode(secret),
    };
  } else if (o.peer.length > 0 || o.peersDns) {
    usage(
      "--peer and --peers-dns need --peer-listen",
      "the address this proxy's peers reach it on",
    );
  }
  const code = await runProxy({
    listen: address("--listen", o.listen),
    admin: o.admin ? address("--admin", o.admin) : undefined,
    resolver,
    // "auto" settles here, so the "listening" log line names the path in use.
    udp: resolveUdpImpl(o.udp as UdpImpl),
    cacheTtlMs: count("--cache-ttl", o.cacheTtl),
    peers,
    limits: {
      maxSessions: count("--max-sessions", o.maxSessions),
      idleTimeoutMs: count("--idle-timeout", o.idleTimeout),
      initialsPerSecond: count("--initial-rate", o.initialRate),
      initialBurst: Math.max(
        2 * count("--initial-rate", o.initialRate),
        DEFAULT_LIMITS.initialBurst,
      ),
      maxSessionsPerSource: count("--max-per-source", o.maxPerSource),
      maxSessionsPerPrefix: 8 * count("--max-per-source", o.maxPerSource),
      machineSessionsPerSecond: count("--machine-rate", o.machineRate),
      machineSessionBurst: 4 * count("--machine-rate", o.machineRate),
    },
  });
  Deno.exit(code);
} catch (err) {
  console.error(formatError(err));
  // 2 for a mistake in the flags, 1 when the proxy itself failed (one rule for every program).
  Deno.exit(err instanceof VaultError && err.code === "proxy.usage" ? 2 : 1);
}
