/**
 * The vault-proxy program once its flags are parsed: proxy, admin server,
 * JSON logs on stdout, clean stop on SIGTERM/SIGINT.
 *
 * @module
 */
import { lookup } from "node:dns/promises";
import { isIP } from "node:net";
import { VaultError } from "../errors/mod.ts";
import { startAdmin } from "./admin.ts";
import { type LogEvent, type ProxyLimits, startProxy } from "./proxy.ts";
import type { ProxyStats } from "./metrics.ts";
import { cachedResolver, type Resolver } from "./resolver.ts";
import type { UdpImpl } from "./udp.ts";

/** What `bin/vault-proxy.ts` passes. */
export interface RunProxyOptions {
  listen: { hostname: string; port: number };
  admin?: { hostname: string; port: number };
  resolver: Resolver;
  cacheTtlMs?: number;
  udp?: UdpImpl;
  limits?: Partial<ProxyLimits>;
  /**
   * Other proxies (issue 11.4): this proxy's peer socket, the others' addresses (static, and/or
   * a DNS name whose AAAA/A records are re-read every 10 s, e.g. Fly's `<app>.internal`), and
   * the secret they share.
   */
  peers?: {
    listen: { hostname: string; port: number };
    addresses: { hostname: string; port: number }[];
    dns?: { name: string; port: number };
    secret: Uint8Array;
  };
}

/** Longest a peers' DNS lookup may take (Deno's own timeout is 15 s per record type). */
export const PEERS_DNS_TIMEOUT_MS = 2_000;

/**
 * Re-reads the peers' DNS name: every proxy machine of the app, except this one. Both record
 * types at once, each within {@link PEERS_DNS_TIMEOUT_MS}: the first read runs before the proxy
 * listens, and a DNS server that does not answer must not hold the proxy's start (it held it
 * 30 s), nor pile refreshes up behind one another.
 */
export async function peersFromDns(
  dns: { name: string; port: number },
  self: { hostname: string; port: number },
  nameServer?: { ipAddr: string; port: number },
): Promise<{ hostname: string; port: number }[] | undefined> {
  const lists = await Promise.all(
    (["AAAA", "A"] as const).map((type) =>
      Deno.resolveDns(dns.name, type, {
        signal: AbortSignal.timeout(PEERS_DNS_TIMEOUT_MS),
        ...(nameServer ? { nameServer } : {}),
      }).catch(() => [] as string[])
    ),
  );
  const found = lists.flat();
  if (found.length === 0) return undefined; // keep the last list through a DNS hiccup
  return found.filter((h) => !(h === self.hostname && dns.port === self.port))
    .map((hostname) => ({ hostname, port: dns.port }));
}

/** Runs until SIGTERM or SIGINT; resolves with the exit code. */
export async function runProxy(opts: RunProxyOptions): Promise<number> {
  const log = (e: LogEvent) => console.log(JSON.stringify({ t: new Date().toISOString(), ...e }));
  // One tenant's traffic must never take every tenant offline: an error no code path caught (an
  // HTTP accept failing under EMFILE, a rejected promise in a library) is logged with a code and
  // counted in vault_proxy_errors_total, and the relay keeps serving. Not silent: each is a bug
  // or an exhaustion worth a look.
  const errors: Record<string, number> = {};
  const running: { stats?: ProxyStats } = {};
  const survived = (code: string, err: unknown) => {
    errors[code] = (errors[code] ?? 0) + 1;
    if (running.stats) running.stats.errors[code] = (running.stats.errors[code] ?? 0) + 1;
    log({
      event: "error",
      code,
      error: err instanceof Error ? err.stack ?? err.message : String(err),
    });
  };
  const onRejection = (e: PromiseRejectionEvent) => {
    e.preventDefault();
    survived("proxy.unhandled_rejection", e.reason);
  };
  const onUncaught = (e: ErrorEvent) => {
    e.preventDefault();
    survived("proxy.uncaught", e.error ?? e.message);
  };
  globalThis.addEventListener("unhandledrejection", onRejection);
  globalThis.addEventListener("error", onUncaught);
  // fly-global-services is an /etc/hosts name, so getaddrinfo, not DNS; Fly's public UDP is IPv4.
  let hostname = opts.listen.hostname;
  if (!isIP(hostname)) {
    try {
      hostname = (await lookup(hostname, { family: 4 })).address;
    } catch (err) {
      throw new VaultError(
        "proxy.listen",
        `cannot resolve --listen host ${opts.listen.hostname}: ${(err as Error).message}`,
        "off Fly, listen on an address such as 127.0.0.1:4433",
      );
    }
  }
  const peers = opts.peers
    ? { listen: opts.peers.listen, addresses: [...opts.peers.addresses], secret: opts.peers.secret }
    : undefined;
  let refreshing = false;
  const refreshPeers = async () => {
    if (!opts.peers?.dns || !peers || refreshing) return;
    refreshing = true;
    try {
      const found = await peersFromDns(opts.peers.dns, opts.peers.listen);
      if (found) {
        peers.addresses.splice(0, peers.addresses.length, ...opts.peers.addresses, ...found);
      }
    } finally {
      refreshing = false;
    }
  };
  await refreshPeers();
  const proxy = await startProxy({
    listen: { hostname, port: opts.listen.port },
    resolver: cachedResolver(opts.resolver, { ttlMs: opts.cacheTtlMs }),
    udp: opts.udp,
    limits: opts.limits,
    log,
    peers,
  });
  const peerTimer = opts.peers?.dns ? setInterval(() => void refreshPeers(), 10_000) : undefined;
  if (peers) {
    log({
      event: "peers",
      listen: `${peers.listen.hostname}:${proxy.peerPort}`,
      peers: peers.addresses.map((a) => `${a.hostname}:${a.port}`),
    });
  }
  for (const [code, n] of Object.entries(errors)) proxy.stats.errors[code] = n;
  running.stats = proxy.stats;
  const admin = opts.admin ? await startAdmin(proxy, opts.admin) : undefined;
  if (admin) log({ event: "admin_listening", address: `${admin.hostname}:${admin.port}` });
  const { promise: stop, resolve } = Promise.withResolvers<string>();
  const onTerm = () => resolve("SIGTERM");
  const onInt = () => resolve("SIGINT");
  Deno.addSignalListener("SIGTERM", onTerm);
  Deno.addSignalListener("SIGINT", onInt);
  const signal = await stop;
  Deno.removeSignalListener("SIGTERM", onTerm);
  Deno.removeSignalListener("SIGINT", onInt);
  log({ event: "stopping", signal, sessions: proxy.stats.sessions });
  if (peerTimer) clearInterval(peerTimer);
  await Promise.all([proxy.close(), admin?.close()]);
  globalThis.removeEventListener("unhandledrejection", onRejection);
  globalThis.removeEventListener("error", onUncaught);
  return 0;
}
