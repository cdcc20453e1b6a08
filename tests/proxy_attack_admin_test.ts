/**
 * Attack on vault-proxy's admin port (`--admin`): whoever reaches it holds as many idle TCP
 * connections as it likes. They must not take the descriptors the relay needs for sessions
 * (one upstream socket each), nor stop the admin server for good. Run as the real program under
 * a 256-descriptor limit.
 */
import assert from "node:assert/strict";
import { initialFor, receiveWithin, sendTo, startFakeApi, udpOn } from "./proxy_attack_helpers.ts";

const BIN = new URL("../bin/vault-proxy.ts", import.meta.url).pathname;

Deno.test({
  name: "proxy attack: 400 idle admin connections neither starve sessions nor kill /healthz",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    // The Machines API resolver sends to the machine's private IP at port 8443: an address of
    // its own on loopback, so no other test's 8443 is in the way.
    const machine = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.77", port: 8443 });
    const api = await startFakeApi("app1", {
      good0000000001: { id: "good0000000001", state: "started", private_ip: "127.0.0.77" },
    });
    const child = new Deno.Command("prlimit", {
      args: [
        "--nofile=256:256",
        Deno.execPath(),
        "run",
        "-A",
        "--unstable-net",
        BIN,
        "--listen",
        "127.0.0.1:0",
        "--machines-api",
        api.url,
        "--app",
        "app1",
        "--no-wake",
        "--admin",
        "127.0.0.1:0",
      ],
      stdout: "piped",
      stderr: "inherit",
      env: { FLY_API_TOKEN: "t" },
    }).spawn();
    const conns: Deno.TcpConn[] = [];
    const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    try {
      let out = "";
      let proxyPort = 0;
      let adminPort = 0;
      const until = Date.now() + 20_000;
      while (!(proxyPort && adminPort) && Date.now() < until) {
        const { value, done } = await lines.read();
        if (done) break;
        out += value;
        proxyPort ||= Number(out.match(/"listening","address":"127\.0\.0\.1:(\d+)"/)?.[1] ?? 0);
        adminPort ||= Number(
          out.match(/"admin_listening","address":"127\.0\.0\.1:(\d+)"/)?.[1] ?? 0,
        );
      }
      assert.ok(proxyPort && adminPort, out);
      void (async () => {
        while (!(await lines.read()).done) { /* drain the logs */ }
      })().catch(() => {});

      for (let i = 0; i < 400; i++) {
        try {
          conns.push(await Deno.connect({ hostname: "127.0.0.1", port: adminPort }));
        } catch {
          break;
        }
      }
      // A client still gets a session (its upstream socket needs a descriptor).
      const client = udpOn();
      try {
        await sendTo(client, initialFor("good0000000001"), proxyPort);
        const got = await receiveWithin(machine, 5_000);
        assert.ok(got, "the machine got its client's Initial: the relay had a descriptor left");
      } finally {
        client.close();
      }
      // /healthz answers again within the admin deadline, the idle connections still open.
      let healthy = false;
      const until2 = Date.now() + 10_000;
      while (!healthy && Date.now() < until2) {
        try {
          const res = await fetch(`http://127.0.0.1:${adminPort}/healthz`, {
            signal: AbortSignal.timeout(2_000),
          });
          healthy = res.ok && (await res.json()).ok === true;
        } catch {
          await new Promise((r) => setTimeout(r, 200));
        }
      }
      assert.ok(healthy, "/healthz answers while the idle connections are held");
    } finally {
      for (const c of conns) {
        try {
          c.close();
        } catch { /* closed by the server */ }
      }
      child.kill("SIGTERM");
      await child.status;
      await api.close();
      machine.close();
    }
  },
});
