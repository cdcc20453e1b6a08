/**
 * UDP relays in front of vault-proxy for its tests: one that plays a NAT whose
 * mapping changes (the source port the proxy sees changes mid-connection), one
 * that plays anycast at its worst (each client datagram to the next proxy).
 *
 * @module
 */

/** A NAT in front of the proxy: one client-side socket, an outbound socket that `rebind` swaps. */
export function startRebindingRelay(target: { hostname: string; port: number }) {
  const front = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  let client: Deno.NetAddr | undefined;
  let back: Deno.DatagramConn | undefined;
  const outbound: number[] = [];
  const open = () => {
    const b = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
    outbound.push((b.addr as Deno.NetAddr).port);
    (async () => {
      try {
        for await (const [reply] of b) {
          if (client && b === back) await front.send(reply, client).catch(() => {});
        }
      } catch {
        // closed
      }
    })();
    return b;
  };
  back = open();
  (async () => {
    try {
      for await (const [data, from] of front) {
        client = from as Deno.NetAddr;
        await back?.send(data, { transport: "udp", ...target }).catch(() => {});
      }
    } catch {
      // closed
    }
  })();
  return {
    port: (front.addr as Deno.NetAddr).port,
    outbound,
    /** The old mapping is gone (its socket closed): replies to it are lost, as behind a NAT. */
    rebind() {
      const old = back;
      back = open();
      old?.close();
    },
    close() {
      front.close();
      back?.close();
    },
  };
}

/** One client-side socket; each client datagram goes to the next proxy in turn. */
export function startAlternatingRelay(ports: number[]) {
  const front = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  let back = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  let client: Deno.NetAddr | undefined;
  let turn = 0;
  const pump = (b: Deno.DatagramConn) => {
    (async () => {
      try {
        for await (const [reply] of b) {
          if (client && b === back) await front.send(reply, client).catch(() => {});
        }
      } catch {
        // closed
      }
    })();
  };
  pump(back);
  (async () => {
    try {
      for await (const [data, from] of front) {
        client = from as Deno.NetAddr;
        const port = ports[turn++ % ports.length];
        await back.send(data, { transport: "udp", hostname: "127.0.0.1", port }).catch(() => {});
      }
    } catch {
      // closed
    }
  })();
  return {
    port: (front.addr as Deno.NetAddr).port,
    rebind() {
      const old = back;
      back = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
      pump(back);
      old.close();
    },
    close() {
      front.close();
      back.close();
    },
  };
}
