/**
 * The embedded demo behind `npm start`: flysim with one vault machine
 * running the real init on a rootfs made from the host, a client config in
 * a private directory, and the real client driven through attest, pin,
 * auth and exec. State lives outside the repo and persists between runs,
 * like a stopped machine that starts again with its volume.
 *
 * @module
 */
import { join } from "node:path";
import { homedir } from "node:os";
import { fileURLToPath } from "node:url";
import { startOidcIssuer } from "./oidc.ts";
import { createInitLauncher, type LaunchedMachine } from "./runner.ts";
import { buildHostRootfsTarball } from "./host_rootfs.ts";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));

/** The demo's state directory: `$FLY_VAULT_DEMO_DIR`, else `~/.local/state/fly-vault-demo`. */
export function demoStateDir(): string {
  const explicit = Deno.env.get("FLY_VAULT_DEMO_DIR");
  if (explicit) return explicit;
  const state = Deno.env.get("XDG_STATE_HOME") || join(homedir(), ".local", "state");
  return join(state, "fly-vault-demo");
}

interface DemoState {
  machine_id: string;
  private_ip: string;
  access_token: string;
  org: string;
  app: string;
}

function randomHex(bytes: number): string {
  return Array.from(
    crypto.getRandomValues(new Uint8Array(bytes)),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("");
}

async function loadState(dir: string): Promise<DemoState> {
  const file = join(dir, "demo.json");
  try {
    return JSON.parse(await Deno.readTextFile(file));
  } catch {
    const state: DemoState = {
      machine_id: randomHex(7),
      private_ip: `127.${20 + Math.floor(Math.random() * 200)}.${
        1 + Math.floor(Math.random() * 250)
      }.1`,
      access_token: randomHex(24),
      org: "demo-org",
      app: "vault-tenants",
    };
    await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
    await Deno.writeTextFile(file, JSON.stringify(state, null, 2), { mode: 0o600 });
    return state;
  }
}

/** A running demo. */
export interface Demo {
  stateDir: string;
  configDir: string;
  machine: LaunchedMachine;
  /** Runs the real fly-vault CLI against the demo config, stdio inherited (stdin optional). */
  client(args: string[], opts?: { stdin?: "inherit" | "null" }): Promise<number>;
  close(): Promise<void>;
}

const dim = (s: string) => Deno.stdout.isTerminal() ? `\x1b[2m${s}\x1b[0m` : s;
const bold = (s: string) => Deno.stdout.isTerminal() ? `\x1b[1m${s}\x1b[0m` : s;

/** Brings the demo vault up (creating it on first run). */
export async function startDemo(opts: { quiet?: boolean } = {}): Promise<Demo> {
  const stateDir = demoStateDir();
  const state = await loadState(stateDir);
  const note = (s: string) => opts.quiet || console.error(dim(`flysim: ${s}`));
  const issuer = await startOidcIssuer({ hostname: "127.0.0.1", port: 0 });
  note(`OIDC issuer for org ${state.org} at ${issuer.baseUrl}/${state.org}`);
  const volumeDir = join(stateDir, "volumes", state.machine_id);
  await Deno.mkdir(volumeDir, { recursive: true });
  const tarball = join(stateDir, "rootfs", "demo-rootfs.tar.gz");
  try {
    await Deno.stat(tarball);
  } catch {
    note("first run: packing a small rootfs from this machine's own programs");
    await buildHostRootfsTarball(tarball);
  }
  const launcher = createInitLauncher({
    issuer,
    runDir: join(stateDir, "run"),
  });
  const machine = await launcher.start({
    id: state.machine_id,
    name: `tenant-demo-1`,
    app: state.app,
    org: state.org,
    region: "ord",
    image: "registry.fly.io/vault-tenants/init:demo",
    env: { ACCESS_TOKEN: state.access_token },
    volumeDir,
    privateIp: state.private_ip,
  });
  note(`machine ${state.machine_id} (init pid ${machine.pid}) serving QUIC on ${machine.address}`);
  const configDir = join(stateDir, "client");
  await Deno.mkdir(configDir, { recursive: true, mode: 0o700 });
  await Deno.writeTextFile(
    join(configDir, "config.toml"),
    `# Written by the fly-vault demo (npm start). The issuer's port changes each run.
[vault.demo]
address = "${machine.address}"
org = "${state.org}"
app = "${state.app}"
machine_id = "${state.machine_id}"
access_token = "${state.access_token}"
rootfs = "${tarball}"
oidc_issuer = "${issuer.baseUrl}"
local_simulation = true
`,
    { mode: 0o600 },
  );
  return {
    stateDir,
    configDir,
    machine,
    async client(args, o = {}) {
      const child = new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", "--quiet", join(ROOT, "bin", "fly-vault.ts"), ...args],
        env: { FLY_VAULT_CONFIG_DIR: configDir },
        stdin: o.stdin ?? "inherit",
        stdout: "inherit",
        stderr: "inherit",
      }).spawn();
      return (await child.status).code;
    },
    async close() {
      await machine.stop();
      await issuer.close();
    },
  };
}

/** The scripted tour `npm start` prints. Returns the exit status. */
export async function runTour(demo: Demo): Promise<number> {
  const step = async (title: string, args: string[]) => {
    console.log(`\n${bold(`$ fly-vault ${args.join(" ")}`)}   ${dim(`# ${title}`)}`);
    const code = await demo.client(args, { stdin: "null" });
    if (code !== 0) console.log(dim(`(exit status ${code})`));
    return code;
  };
  let failures = 0;
  const expect = async (want: number, title: string, args: string[]) => {
    if (await step(title, args) !== want) failures++;
  };
  await expect(0, "attest (init made a new identity at boot), pin, authenticate", [
    "status",
    "-v",
    "demo",
  ]);
  await expect(0, "provisions the rootfs if it has none (upload, verify, atomic swap)", [
    "connect",
    "demo",
  ]);
  await expect(0, "the pin is reused: no attestation this time", [
    "exec",
    "-v",
    "-n",
    "demo",
    "--",
    "uname",
    "-a",
  ]);
  await expect(3, "stdout and stderr stay apart; the exit status is the command's", [
    "exec",
    "-n",
    "demo",
    "--",
    "sh",
    "-c",
    "echo to stdout; echo to stderr >&2; exit 3",
  ]);
  console.log(
    `\n${bold("More:")} ${dim("(the vault runs while npm start / npm run sim runs)")}
  npm start -- exec demo -- ls -la /         any fly-vault command against the demo vault
  npm start -- connect demo --reprovision    send the rootfs again; /root and /home are kept
  npm run sim                                keep it running; use npx fly-vault in another terminal
  npm run demo:reset                         start over (state in ${demo.stateDir})`,
  );
  if (failures === 0 && Deno.stdin.isTerminal()) {
    console.log(
      `\n${bold("$ fly-vault connect demo")}   ${
        dim("# your console in the vault; exit or ~. to leave, ~? for help")
      }`,
    );
    return await demo.client(["connect", "demo"]);
  }
  return failures === 0 ? 0 : 1;
}
