import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { createMachineIdentity } from "../pki/mod.ts";
import { dialQuic, listenQuic } from "./mod.ts";
import {
  ENDPOINT_SOCKET_BUFFER,
  readUdpBuffers,
  setTuningReport,
  tuneEndpointSocket,
} from "./udp_buffers.ts";

const SERVER = "be0c4b0c4b0c4b.vault.internal";

/** The kernel's default receive buffer, as it reports it (what an untuned socket has). */
const DEFAULT_RCVBUF = Number(Deno.readTextFileSync("/proc/sys/net/core/rmem_default").trim());
const RMEM_MAX = Number(Deno.readTextFileSync("/proc/sys/net/core/rmem_max").trim());
/** What a tuned socket reports: twice the request; capped at rmem_max unless root forced it. */
const TUNED = 2 *
  (Deno.uid() === 0 ? ENDPOINT_SOCKET_BUFFER : Math.min(ENDPOINT_SOCKET_BUFFER, RMEM_MAX));

Deno.test("listenQuic and dialQuic raise both endpoints' UDP socket buffers", async () => {
  assert.ok(TUNED > DEFAULT_RCVBUF, "this host's defaults already match the tuning");
  const identity = await createMachineIdentity({ machineId: "be0c4b0c4b0c4b" });
  const listener = listenQuic({
    hostname: "127.0.0.1",
    port: 0,
    certChainPem: identity.chainPem,
    keyPem: identity.leafKeyPem,
  });
  try {
    const server = readUdpBuffers(listener.addr.port);
    assert.deepEqual(server, { rcvbuf: TUNED, sndbuf: TUNED });
    const accepted = listener.connections()[Symbol.asyncIterator]().next();
    const client = await dialQuic({
      address: `127.0.0.1:${listener.addr.port}`,
      serverName: SERVER,
      caPem: identity.identityPem,
      timeoutMs: 5_000,
    });
    const conn = (await accepted).value!;
    // Same process: the server sees the client's endpoint port, whose socket is ours to read.
    assert.deepEqual(readUdpBuffers(conn.remoteAddr.port), { rcvbuf: TUNED, sndbuf: TUNED });
    await client.close();
    await conn.close();
  } finally {
    listener.close();
  }
});

Deno.test("a tuning failure returns nothing, is reported once and never throws", () => {
  const lines: string[] = [];
  const prev = setTuningReport((l) => lines.push(l));
  try {
    // No socket of this process is bound at port 9 (discard); nor can one's address be read.
    assert.equal(tuneEndpointSocket(9), undefined);
    assert.equal(
      tuneEndpointSocket(() => {
        throw new Error("endpoint closed");
      }),
      undefined,
    );
    assert.equal(lines.length, 1);
    assert.match(lines[0], /left at the kernel's default \(no UDP socket .* port 9\)/);
  } finally {
    setTuningReport(prev);
  }
});

Deno.test("without FFI permission the endpoints keep the kernel's buffers and still connect", async () => {
  const identity = await createMachineIdentity({ machineId: "be0c4b0c4b0c4b" });
  const child = fileURLToPath(new URL("./udp_buffers_child.ts", import.meta.url));
  const out = await new Deno.Command(Deno.execPath(), {
    // Everything but FFI: the tuning cannot reach libc.
    args: ["run", "--unstable-net", "--allow-net", "--allow-read", "--allow-env", "--quiet", child],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { CHAIN: identity.chainPem, KEY: identity.leafKeyPem, CA: identity.identityPem },
  }).output();
  const stdout = new TextDecoder().decode(out.stdout);
  const stderr = new TextDecoder().decode(out.stderr);
  assert.ok(out.success, `child failed: ${stderr}`);
  const got = JSON.parse(stdout);
  assert.equal(got.echoed, "hello");
  // One line for the process, not one per endpoint (listener and client both failed).
  const lines = stderr.split("\n").filter((l) => l.includes("UDP buffers"));
  assert.equal(lines.length, 1, stderr);
  assert.match(lines[0], /left at the kernel's default/);
});
