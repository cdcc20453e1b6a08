/**
 * The proxy's Prometheus metrics, one registry per proxy (tests run several).
 * The relay's hot path bumps plain numbers in {@link ProxyStats}; the metrics
 * read them when scraped, so a datagram costs no label lookups.
 *
 * @module
 */
import { Counter, Gauge, Histogram, Registry } from "prom-client";

/** Plain counters the proxy updates; also what tests read. */
export interface ProxyStats {
  sessions: number;
  pending: number;
  /** Bytes pending clients hold (datagrams and reassembly), against maxPendingBytes. */
  pendingBytes: number;
  opened: number;
  closed: Record<string, number>;
  packetsToMachine: number;
  packetsToClient: number;
  bytesToMachine: number;
  bytesToClient: number;
  drops: Record<string, number>;
  refusals: Record<string, number>;
  resolves: Record<string, number>;
  /** Errors the proxy survived, by code (proxy.recv, proxy.unhandled, ...). */
  errors: Record<string, number>;
  /** Routing events: migrated (client address changed), rerouted, woke, peer_forwarded... */
  events: Record<string, number>;
}

/** A zeroed {@link ProxyStats}. */
export function newStats(): ProxyStats {
  return {
    sessions: 0,
    pending: 0,
    pendingBytes: 0,
    opened: 0,
    closed: {},
    packetsToMachine: 0,
    packetsToClient: 0,
    bytesToMachine: 0,
    bytesToClient: 0,
    drops: {},
    refusals: {},
    resolves: {},
    errors: {},
    events: {},
  };
}

/** Adds one to `map[key]`. */
export function bump(map: Record<string, number>, key: string, n = 1): void {
  map[key] = (map[key] ?? 0) + n;
}

/** The registry and the one metric observed directly. */
export interface ProxyMetrics {
  registry: Registry;
  routingSeconds: Histogram;
}

/** Creates the proxy's metrics over `stats` in a fresh registry. */
export function createMetrics(stats: ProxyStats): ProxyMetrics {
  const registry = new Registry();
  const registers = [registry];
  // Counters are synced from the plain numbers on scrape: inc by what grew since last time.
  const synced = (
    name: string,
    help: string,
    label: string,
    read: () => Record<string, number>,
  ) => {
    const last: Record<string, number> = {};
    new Counter({
      name,
      help,
      labelNames: [label],
      registers,
      collect() {
        for (const [k, v] of Object.entries(read())) {
          const d = v - (last[k] ?? 0);
          if (d > 0) this.inc({ [label]: k }, d);
          last[k] = v;
        }
      },
    });
  };
  new Gauge({
    name: "vault_proxy_sessions",
    help: "Client sessions being relayed now",
    registers,
    collect() {
      this.set(stats.sessions);
    },
  });
  new Gauge({
    name: "vault_proxy_pending_clients",
    help: "Clients whose ClientHello is incomplete or whose machine is being resolved",
    registers,
    collect() {
      this.set(stats.pending);
    },
  });
  new Gauge({
    name: "vault_proxy_pending_bytes",
    help: "Bytes held for pending clients (datagrams and ClientHello reassembly)",
    registers,
    collect() {
      this.set(stats.pendingBytes);
    },
  });
  synced(
    "vault_proxy_errors_total",
    "Errors the proxy logged and survived, by code",
    "code",
    () => stats.errors,
  );
  synced(
    "vault_proxy_sessions_opened_total",
    "Sessions created",
    "kind",
    () => ({ session: stats.opened }),
  );
  synced(
    "vault_proxy_sessions_closed_total",
    "Sessions ended, by reason",
    "reason",
    () => stats.closed,
  );
  synced(
    "vault_proxy_packets_total",
    "Datagrams relayed, by direction",
    "direction",
    () => ({ to_machine: stats.packetsToMachine, to_client: stats.packetsToClient }),
  );
  synced(
    "vault_proxy_bytes_total",
    "Datagram bytes relayed, by direction",
    "direction",
    () => ({ to_machine: stats.bytesToMachine, to_client: stats.bytesToClient }),
  );
  synced("vault_proxy_drops_total", "Datagrams dropped, by reason", "reason", () => stats.drops);
  synced(
    "vault_proxy_refusals_total",
    "Clients answered with an Initial CONNECTION_CLOSE, by reason (full, source_full, " +
      "prefix_full, machine_rate, exhausted, resolve_busy, unknown_machine, ...)",
    "reason",
    () => stats.refusals,
  );
  synced(
    "vault_proxy_resolves_total",
    "Machine lookups, by result",
    "result",
    () => stats.resolves,
  );
  synced(
    "vault_proxy_events_total",
    "Routing events: migrated (a client's address changed, found by DCID), rerouted (a " +
      "machine's new address), woke (a stopped or suspended machine started for a client), " +
      "peer_forwarded / peer_received (a packet for a session another proxy holds)",
    "event",
    () => stats.events,
  );
  const routingSeconds = new Histogram({
    name: "vault_proxy_routing_seconds",
    help: "From a client's first Initial to its session (SNI read, machine resolved)",
    buckets: [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5],
    registers,
  });
  return { registry, routingSeconds };
}
