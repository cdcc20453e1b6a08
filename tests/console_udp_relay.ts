/**
 * A UDP relay between the client and a machine, so a test can cut the
 * client's network path without touching either process: `cut()` silently
 * drops every packet of the flows open now (as a sleeping laptop or a Wi-Fi
 * change does); a reconnect comes from a new source port and gets through.
 * `drop(true)` instead loses every packet, of every flow old or new, until
 * `drop(false)`: an outage of the path itself, after which it works again.
 *
 * @module
 */
export interface UdpRelay {
  /** `127.0.0.1:port` for the client's config. */
  address: string;
  /** Blackholes every flow that exists now. */
  cut(): void;
  /** Loses every packet both ways (all flows, also new ones) while on. */
  drop(on: boolean): void;
  /** Flows seen so far (a reconnect adds one). */
  readonly flows: number;
  close(): void;
}

/** Relays datagrams from a new loopback port to `target` (`host:port`). */
export function startUdpRelay(target: { hostname: string; port: number }): UdpRelay {
  const front = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const flows = new Map<string, { back: Deno.DatagramConn; dead: boolean }>();
  let closed = false;
  let dropping = false;
  (async () => {
    try {
      for await (const [data, from] of front) {
        const peer = from as Deno.NetAddr;
        const key = `${peer.hostname}:${peer.port}`;
        let flow = flows.get(key);
        if (!flow) {
          const back = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
          const f = { back, dead: false };
          flow = f;
          flows.set(key, f);
          (async () => {
            try {
              for await (const [reply] of back) {
                if (!f.dead && !dropping) await front.send(reply, peer);
              }
            } catch {
              // closed
            }
          })();
        }
        if (!flow.dead && !dropping) {
          await flow.back.send(data, { transport: "udp", ...target }).catch(() => {});
        }
      }
    } catch {
      if (!closed) throw new Error("relay failed");
    }
  })();
  return {
    address: `127.0.0.1:${(front.addr as Deno.NetAddr).port}`,
    cut() {
      for (const f of flows.values()) f.dead = true;
    },
    drop(on) {
      dropping = on;
    },
    get flows() {
      return flows.size;
    },
    close() {
      closed = true;
      front.close();
      for (const f of flows.values()) f.back.close();
    },
  };
}
