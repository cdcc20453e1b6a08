/**
 * fly-vault: the client. Parses flags and calls src/client; nothing else.
 */
import { Command, CommanderError, Option } from "commander";
import {
  buildCommand,
  connectCommand,
  copyCommand,
  ensureCleanTrustStore,
  execCommand,
  execTtyCommand,
  EXIT_USAGE,
  forgetCommand,
  forwardCommand,
  type GlobalFlags,
  masterCommand,
  pipeCommand,
  reportError,
  sessionsCommand,
  statusCommand,
  vaultsCommand,
} from "../src/client/mod.ts";

// Before anything can dial: a pin must be the only CA a vault connection trusts.
await ensureCleanTrustStore();

const program = new Command("fly-vault")
  .description(
    "Reach your Fly.io development VM without trusting the network: every connection checks a " +
      "Fly-signed attestation bound to the machine's TLS key before your access token is sent.",
  )
  .option("-c, --config <file>", "config file (default ~/.config/fly-vault/config.toml)")
  .option("-v, --verbose", "say what happens: attesting, pinning, authenticating")
  .option("--json", "machine-readable output where a command has any")
  .option(
    "--connect-timeout <seconds>",
    "bound the whole connect (handshakes, attestation, authentication) to this long (default 10)",
    (v: string) => {
      const n = Number(v);
      if (!(n > 0)) throw new CommanderError(2, "usage", `--connect-timeout ${v} is not seconds`);
      return n;
    },
  )
  .option("--no-persist", "neither use nor leave a master connection (config persist)")
  .exitOverride()
  .addHelpText(
    "after",
    `
Examples:
  fly-vault connect my-dev                        console (provisions first if needed)
  fly-vault connect my-dev --forward 3000:localhost:3000
  fly-vault connect my-dev --reprovision          send a new rootfs; /root and /home are kept
  fly-vault exec my-dev -- ls -lash /             one command; its exit status is ours
  fly-vault exec -t my-dev -- htop                one interactive command on a PTY
  fly-vault cp -r ./src my-dev:/root/src          copy files (vault:/path is the remote side)
  ssh -o ProxyCommand='fly-vault pipe my-dev localhost:2222' root@vault

Exit status: the remote command's for exec; 2 bad usage; 255 fly-vault itself failed.
Config: [vault.NAME] tables with address, org, app, machine_id, access_token, forward,
rootfs, rootfs_url, persist (see README); persist = "10m" keeps a master connection that
later commands share (fly-vault master NAME --status / --stop). FLY_VAULT_CONFIG_DIR points at another config directory.
Console escapes (after a newline): ~. disconnect, ~? help, ~~ a literal ~.`,
  );

let status = 0;
const globals = () => program.opts<GlobalFlags>();
const collect = (value: string, previous: string[] = []) => [...previous, value];

program.command("connect")
  .description("open a console in the vault; provision it first when it has no rootfs")
  .argument("<vault>", "vault name from config.toml")
  .option("-L, --forward <spec>", "forward LPORT:HOST:RPORT or BIND:LPORT:HOST:RPORT", collect)
  .option("--reprovision", "send a new rootfs (rootfs or rootfs_url); /root and /home are kept")
  .option("--new", "start a new console session instead of re-attaching")
  .option("--session <id>", "attach to this session (see `fly-vault sessions`)")
  .action(async (vault: string, opts) => {
    status = await connectCommand(vault, { ...globals(), ...opts });
  });

program.command("exec")
  .description("run a command in the vault (stdin, stdout, stderr and exit status pass through)")
  .argument("<vault>", "vault name from config.toml")
  .argument("<command...>", "the command and its arguments (put -- before them)")
  .option("-t, --tty", "run it on a PTY, for interactive programs (like ssh -t)")
  .option("-n, --no-stdin", "do not read stdin (like ssh -n)")
  .option("-e, --env <KEY=VALUE>", "environment for the command (repeatable)", collect)
  .option("-C, --cwd <dir>", "working directory in the vault (default /root)")
  .action(async (vault: string, argv: string[], opts) => {
    const flags = { ...globals(), cwd: opts.cwd };
    status = opts.tty
      ? await execTtyCommand(vault, argv, { ...flags, env: opts.env })
      : await execCommand(vault, argv, { ...flags, noStdin: opts.stdin === false, env: opts.env });
  });

program.command("forward")
  .description("forward local ports into the vault without a console, until Ctrl-C")
  .argument("<vault>", "vault name from config.toml")
  .argument("<spec...>", "LPORT:HOST:RPORT or BIND:LPORT:HOST:RPORT")
  .action(async (vault: string, specs: string[]) => {
    status = await forwardCommand(vault, specs, globals());
  });

program.command("pipe")
  .description("join stdin/stdout to a TCP connection made from the vault (ssh ProxyCommand)")
  .argument("<vault>", "vault name from config.toml")
  .argument("<host:port>", "where to connect, as seen from the vault")
  .action(async (vault: string, target: string) => {
    status = await pipeCommand(vault, target, globals());
  });

program.command("cp")
  .description("copy files to or from the vault; vault:/path names the remote side")
  .argument("<paths...>", "SRC… DEST")
  .option("-r, --recursive", "copy directories")
  .action(async (paths: string[], opts) => {
    status = await copyCommand(paths, { ...globals(), recursive: opts.recursive });
  });

program.command("sessions")
  .description("list the vault's console sessions (they survive disconnects)")
  .argument("<vault>", "vault name from config.toml")
  .action(async (vault: string) => {
    status = await sessionsCommand(vault, globals());
  });

program.command("status")
  .description("attest, authenticate and show the vault's provisioning state")
  .argument("<vault>", "vault name from config.toml")
  .action(async (vault: string) => {
    status = await statusCommand(vault, globals());
  });

program.command("build")
  .description("build the rootfs tar.gz from a directory, an OCI/docker-save image or a Dockerfile")
  .argument("[source]", "DIR, OCI layout, docker-save tarball or Dockerfile (default ./Dockerfile)")
  .option("-o, --output <file>", "where to write (default the vault's rootfs, else ~/.config/…)")
  .option("--vault <name>", "write to this vault's configured rootfs path")
  .option("--engine <docker|podman>", "container engine for a Dockerfile")
  .action(async (source: string | undefined, opts) => {
    status = await buildCommand(source, { ...globals(), ...opts });
  });

program.command("forget")
  .description("drop a vault's pinned identity and machine; the next connect attests again")
  .argument("<vault>", "vault name")
  .addHelpText(
    "after",
    `
Use it when a vault was recreated (a new machine under the same name): fly-vault refuses a
different machine than the one it first attested (error attest.machine_changed), as ssh
refuses a changed host key.

Example:
  fly-vault forget my-dev && fly-vault status my-dev`,
  )
  .action(async (vault: string) => {
    status = await forgetCommand(vault, globals());
  });

program.command("master")
  .description("the vault's master connection (config persist): show it or stop it")
  .argument("<vault>", "vault name from config.toml")
  .option("--status", "say whether a master is running (exit 0) or not (exit 1), like ssh -O check")
  .option("--stop", "end the master now, like ssh -O exit (commands in flight fail)")
  .addOption(new Option("--serve", "run the master (started by other commands)").hideHelp())
  .action(async (vault: string, opts) => {
    status = await masterCommand(vault, { ...globals(), ...opts });
  });

program.command("vaults")
  .description("list the vaults in config.toml")
  .action(async () => {
    status = await vaultsCommand(globals());
  });

try {
  await program.parseAsync();
} catch (err) {
  if (err instanceof CommanderError) {
    if (err.code === "usage") console.error(`error: ${err.message}`);
    status = err.exitCode === 0 ? 0 : EXIT_USAGE;
  } else {
    status = reportError(err);
  }
}
Deno.exit(status);
