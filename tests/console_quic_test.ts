/**
 * The console over the real QUIC transport (listenQuic/dialQuic with a
 * machine identity): idle longer than the connection's idle timeout and
 * still connected (keep-alives); the connection killed under a running
 * console, which reconnects by itself and finds its shell as it left it.
 */
import assert from "node:assert/strict";
import { createInteractiveHandlers, type LocalTerminal, runConsole } from "../src/console/mod.ts";
import { createMachineIdentity, serverNameFor } from "../src/pki/mod.ts";
import { FrameReader, FrameWriter, StreamTag } from "../src/protocol/mod.ts";
import {
  CLIENT_KEEPALIVE_MS,
  dialQuic,
  listenQuic,
  type VaultConnection,
} from "../src/transport/mod.ts";
import { buildTestRootfs } from "./console_rootfs.ts";

function io() {
  let ctl!: ReadableStreamDefaultController<Uint8Array>;
  const stdin = new ReadableStream<Uint8Array>({ start: (c) => void (ctl = c) });
  let text = "";
  let waiters: (() => void)[] = [];
  const stdout = new WritableStream<Uint8Array>({
    write(chunk) {
      text += new TextDecoder().decode(chunk);
      for (const w of waiters) w();
    },
  });
  const terminal: LocalTerminal = {
    isTerminal: () => true,
    setRaw: () => {},
    size: () => ({ cols: 80, rows: 24 }),
    onResize: () => () => {},
  };
  return {
    stdin,
    stdout,
    terminal,
    type: (s: string) => ctl.enqueue(new TextEncoder().encode(s)),
    /** Waits for `re` in output that arrived after the previous match. */
    waitFor(re: RegExp, ms = 20_000): Promise<void> {
      return new Promise((resolve, reject) => {
        const check = () => {
          const m = re.exec(text);
          if (!m) return false;
          text = text.slice(m.index + m[0].length);
          clearTimeout(timer);
          waiters = waiters.filter((w) => w !== check);
          resolve();
          return true;
        };
        const timer = setTimeout(
          () =>
            reject(new Error(`timed out waiting for ${re} in ${JSON.stringify(text.slice(-400))}`)),
          ms,
        );
        if (!check()) waiters.push(check);
      });
    },
  };
}

Deno.test({
  name:
    "console over QUIC: idle past the idle timeout stays up; a killed connection reconnects and re-attaches",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const rootfs = await buildTestRootfs();
    const bundle = createInteractiveHandlers();
    const identity = await createMachineIdentity({ machineId: "m-console" });
    // Shorter than the test's idle wait but longer than the client's keep-alive interval.
    const idleTimeoutMs = CLIENT_KEEPALIVE_MS + 1500;
    const listener = listenQuic({
      hostname: "127.0.0.1",
      port: 0,
      certChainPem: identity.chainPem,
      keyPem: identity.leafKeyPem,
      idleTimeoutMs,
    });
    const serverConns: VaultConnection[] = [];
    const ctx = { store: { rootfsDir: rootfs } };
    (async () => {
      for await (const conn of listener.connections()) {
        serverConns.push(conn);
        (async () => {
          for await (const stream of conn.incoming()) {
            if (stream.tag !== StreamTag.console) continue;
            bundle.handlers.console(
              new FrameReader(stream.readable),
              new FrameWriter(stream.writable),
              ctx,
            ).catch(() => {});
          }
        })();
      }
    })();
    const dial = () =>
      dialQuic({
        address: `127.0.0.1:${listener.addr.port}`,
        serverName: serverNameFor("m-console"),
        caPem: identity.identityPem,
        timeoutMs: 5000,
      });
    let conn = await dial();
    let dials = 1;
    const t = io();
    const statuses: string[] = [];
    let reattached!: () => void;
    const reattach = new Promise<void>((r) => reattached = r);
    const running = runConsole((tag) => conn.openStream(tag), {
      stdin: t.stdin,
      stdout: t.stdout,
      terminal: t.terminal,
      onStatus: (line) => {
        statuses.push(line);
        if (line.startsWith("reconnected")) reattached();
      },
      backoffMs: { initial: 50, max: 500 },
      reopen: async () => {
        conn = await dial();
        dials++;
        return (tag) => conn.openStream(tag);
      },
    });
    running.catch(() => {});
    try {
      await t.waitFor(/fv# $/);
      t.type("V=kept; echo set-$V\r");
      await t.waitFor(/set-kept/);
      await t.waitFor(/fv# $/);

      // Idle (no bytes either way) for longer than the negotiated idle timeout.
      const closedEarly = await Promise.race([
        conn.closed.then(() => true),
        new Promise<false>((r) => setTimeout(() => r(false), idleTimeoutMs + 2500)),
      ]);
      assert.equal(closedEarly, false, "the idle connection was closed");
      t.type("echo idle-$V\r");
      await t.waitFor(/idle-kept/);
      await t.waitFor(/fv# $/);
      assert.equal(dials, 1);

      // Kill the connection (not the process): the client reconnects by itself.
      serverConns[0].close(0, "test: network gone");
      await reattach;
      t.type("echo back-$V\r");
      await t.waitFor(/back-kept/);
      assert.equal(dials, 2);
      assert.ok(statuses.some((s) => s.startsWith("connection lost")), statuses.join("|"));
      assert.ok(statuses.some((s) => s.startsWith("reconnected to session")), statuses.join("|"));
      assert.equal(bundle.sessions().length, 1);

      t.type("exit 4\r");
      assert.deepEqual((await running).exit, { code: 4, signal: null });
    } finally {
      conn.close();
      listener.close();
      await bundle.closeAll();
      await Deno.remove(rootfs, { recursive: true }).catch(() => {});
    }
  },
});
