/**
 * The client's command line. `fly-vault exec` in its usual shapes is parsed
 * by a small exact parser and runs without loading commander (and the Node
 * compatibility modules it pulls in) or the modules of other commands; every
 * other command line, and anything the fast parser is not sure of (help,
 * unknown or combined flags, a value that looks like a flag), goes to
 * commander. `cli_test.ts` checks both parse every accepted shape alike.
 *
 * @module
 */
import type { GlobalFlags } from "./commands.ts";
import { mark } from "./timing.ts";

/** One `fly-vault exec`, as both parsers produce it. */
export interface ExecInvocation {
  globals: GlobalFlags;
  vault: string;
  argv: string[];
  tty: boolean;
  noStdin: boolean;
  /** Run `argv` joined with spaces by the vault user's login shell (ssh's way); false: `--argv`. */
  shell: boolean;
  env?: string[];
  cwd?: string;
}

const GLOBAL_VALUE: Record<string, "config" | "connectTimeout"> = {
  "-c": "config",
  "--config": "config",
  "--connect-timeout": "connectTimeout",
};
const GLOBAL_BOOL: Record<string, "verbose" | "json"> = {
  "-v": "verbose",
  "--verbose": "verbose",
  "--json": "json",
};
const EXEC_VALUE: Record<string, "env" | "cwd"> = {
  "-e": "env",
  "--env": "env",
  "-C": "cwd",
  "--cwd": "cwd",
};

/**
 * `[globals…] exec [exec options…] VAULT [--] COMMAND…` without commander, or
 * null when the command line is anything else or anything unusual. As with ssh,
 * options end at the vault name: everything after it (one leading `--` dropped)
 * is the command, whatever it looks like.
 */
export function fastExecArgv(args: string[]): ExecInvocation | null {
  const globals: GlobalFlags = { persist: true };
  const inv = {
    vault: "",
    argv: [] as string[],
    tty: false,
    noStdin: false,
    shell: true,
  } as ExecInvocation;
  const seen = new Set<string>();
  let i = 0;
  const value = (flag: string): string | null => {
    const eq = flag.indexOf("=");
    if (flag.startsWith("--") && eq > 0) return flag.slice(eq + 1);
    const v = args[++i];
    return v === undefined || v.startsWith("-") ? null : v;
  };
  const name = (flag: string) => flag.startsWith("--") ? flag.split("=")[0] : flag;
  // Global options, up to the subcommand.
  for (; i < args.length && args[i] !== "exec"; i++) {
    const flag = name(args[i]);
    if (seen.has(flag)) return null;
    seen.add(flag);
    if (GLOBAL_BOOL[flag] && flag === args[i]) globals[GLOBAL_BOOL[flag]] = true;
    else if (flag === "--no-persist" && flag === args[i]) globals.persist = false;
    else if (GLOBAL_VALUE[flag]) {
      const v = value(args[i]);
      if (v === null || v === "") return null;
      if (GLOBAL_VALUE[flag] === "config") globals.config = v;
      else {
        const n = Number(v);
        if (!(n > 0)) return null;
        globals.connectTimeout = n;
      }
    } else return null;
  }
  if (args[i++] !== "exec") return null;
  // exec's own options, up to the vault.
  for (; i < args.length && args[i].startsWith("-"); i++) {
    const flag = name(args[i]);
    if (flag === "-t" || flag === "--tty") {
      if (flag !== args[i] || inv.tty) return null;
      inv.tty = true;
    } else if (flag === "-n" || flag === "--no-stdin") {
      if (flag !== args[i] || inv.noStdin) return null;
      inv.noStdin = true;
    } else if (flag === "-A" || flag === "--argv") {
      if (flag !== args[i] || !inv.shell) return null;
      inv.shell = false;
    } else if (flag === "--no-persist") {
      if (flag !== args[i] || globals.persist === false) return null;
      globals.persist = false;
    } else if (EXEC_VALUE[flag]) {
      const v = value(args[i]);
      if (v === null) return null;
      if (EXEC_VALUE[flag] === "env") inv.env = [...inv.env ?? [], v];
      else if (inv.cwd !== undefined) return null;
      else inv.cwd = v;
    } else return null;
  }
  const vault = args[i++];
  if (vault === undefined || vault.startsWith("-")) return null;
  let rest = args.slice(i);
  if (rest[0] === "--") rest = rest.slice(1);
  if (rest.length === 0) return null;
  return { ...inv, globals, vault, argv: rest };
}

/** Runs one exec invocation; resolves to the exit status. */
export async function runExecInvocation(inv: ExecInvocation): Promise<number> {
  const flags = { ...inv.globals, cwd: inv.cwd, shell: inv.shell };
  // As ssh: the words joined with spaces, one command line for the login shell.
  const argv = inv.shell ? [inv.argv.join(" ")] : inv.argv;
  try {
    if (inv.tty) {
      const { execTtyCommand } = await import("./interactive.ts");
      return await execTtyCommand(inv.vault, argv, { ...flags, env: inv.env });
    }
    const { execCommand } = await import("./commands.ts");
    mark("client.commands_loaded");
    return await execCommand(inv.vault, argv, { ...flags, noStdin: inv.noStdin, env: inv.env });
  } catch (err) {
    // The command could not start in the vault (as `cd DIR && …` failing over ssh): 1, not 255.
    if ((err as { code?: string }).code !== "exec.no_cwd") throw err;
    const { formatError } = await import("../errors/mod.ts");
    console.error(formatError(err));
    return 1;
  }
}

const EXEC_VALUE_FLAGS = new Set([
  "-e",
  "--env",
  "-C",
  "--cwd",
  "-c",
  "--config",
  "--connect-timeout",
]);

/**
 * For commander: `exec`'s options end at the vault name, as ssh's end at the
 * host. Puts a `--` right after the vault (dropping one the user wrote there) so
 * commander takes everything after it as the command. Other command lines: as is.
 */
export function execOperandsLiteral(args: string[]): string[] {
  let i = 0;
  let sawExec = false;
  for (; i < args.length; i++) {
    const a = args[i];
    if (a === "--") return args;
    if (a.startsWith("-") && a.length > 1) {
      if (EXEC_VALUE_FLAGS.has(a)) i++;
      else if (/^-[a-zA-Z]{2,}$/.test(a)) {
        // A cluster such as -nC: a value flag inside takes the rest, or the next word when last.
        const k = [...a.slice(1)].findIndex((ch) => EXEC_VALUE_FLAGS.has(`-${ch}`));
        if (k === a.length - 2) i++;
      }
      continue;
    }
    if (!sawExec) {
      if (a !== "exec") return args;
      sawExec = true;
      continue;
    }
    break; // the vault
  }
  const rest = args.slice(i + 1);
  if (!sawExec || i >= args.length || rest.length === 0) return args;
  return [...args.slice(0, i + 1), "--", ...(rest[0] === "--" ? rest.slice(1) : rest)];
}

/** The full command line, with commander. `c` is the client module. */
export async function buildProgram(
  c: typeof import("./mod.ts"),
  runExecInvocation: (inv: ExecInvocation) => Promise<number>,
  setStatus: (n: number) => void,
) {
  const { Command, CommanderError, Option } = await import("commander");
  const { ourUsageErrors } = await import("../errors/cli.ts");
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
later commands share (fly-vault master NAME --status / --stop). FLY_VAULT_CONFIG_DIR points
at another config directory.
Console escapes (after a newline): ~. disconnect, ~# list forwards, ~C add one (-L SPEC),
~^Z suspend, ~? help, ~~ a literal ~.
Shell completion: source <(fly-vault completion bash)   (zsh: the same; fish: | source)`,
    );
  // Before any subcommand is added: they inherit it (commander's errors in our style, --version).
  ourUsageErrors(program);

  const globals = () => program.opts<GlobalFlags>();
  const collect = (value: string, previous: string[] = []) => [...previous, value];

  program.command("connect")
    .description("open a console in the vault; provision it first when it has no rootfs")
    .argument("<vault>", "vault name from config.toml")
    .option("-L, --forward <spec>", "forward LPORT:HOST:RPORT or BIND:LPORT:HOST:RPORT", collect)
    .option("--reprovision", "send a new rootfs (rootfs or rootfs_url); /root and /home are kept")
    .option("--new", "start a new console session instead of re-attaching")
    .option("--session <id>", "attach to this session (see `fly-vault sessions`)")
    .option("--wake", "first start the machine if suspended or stopped (see `fly-vault wake`)")
    .option("--api-base <url>", "Machines API for --wake (default https://api.machines.dev)")
    .addHelpText(
      "after",
      `
Examples:
  fly-vault connect my-dev
  fly-vault connect my-dev -L 8080:localhost:8080 -L 127.0.0.1:5432:db:5432
  fly-vault connect my-dev --new                  a second console beside the first
  echo 'uname -a' | fly-vault connect my-dev      no terminal: the login shell reads stdin`,
    )
    .action(async (vault: string, opts) => {
      if (opts.wake) {
        const { wakeCommand } = await import("./wake.ts");
        await wakeCommand(vault, { ...globals(), apiBase: opts.apiBase });
      }
      setStatus(await c.connectCommand(vault, { ...globals(), ...opts }));
    });

  program.command("wake")
    .description("start a suspended or stopped vault through the Machines API (FLY_API_TOKEN)")
    .argument("<vault>", "vault name from config.toml")
    .option("--api-base <url>", "the Machines API (default https://api.machines.dev)")
    .option("--wake-timeout <seconds>", "longest the start may take (default 60)", Number)
    .addHelpText(
      "after",
      `
A vault suspends itself when no client has been connected for its idle time. Through
vault-proxy a connect wakes it by itself; reached directly over 6PN, nobody does: this
starts (resumes) it with a Fly API token you supply in FLY_API_TOKEN (never printed).

Example:
  FLY_API_TOKEN=$(fly tokens create deploy -a my-app) fly-vault wake my-dev`,
    )
    .action(async (vault: string, opts) => {
      const { wakeCommand } = await import("./wake.ts");
      setStatus(await wakeCommand(vault, { ...globals(), ...opts }));
    });

  program.command("exec")
    .description("run a command in the vault (stdin, stdout, stderr and exit status pass through)")
    .argument("<vault>", "vault name from config.toml")
    .argument("<command...>", "the command line; options end at the vault name, as with ssh")
    .option("-t, --tty", "run it on a PTY, for interactive programs (like ssh -t)")
    .option("-A, --argv", "run the words as argv, no shell (for scripts: nothing is re-parsed)")
    .option("-n, --no-stdin", "do not read stdin (like ssh -n)")
    .option("-e, --env <KEY=VALUE>", "environment for the command (repeatable)", collect)
    .option("-C, --cwd <dir>", "working directory in the vault (default /root)")
    .option("--no-persist", "neither use nor leave a master connection (config persist)")
    .addHelpText(
      "after",
      `
As ssh does, exec joins the words after the vault name with spaces and runs that line with
the vault user's login shell (\$SHELL -c), so pipes, quotes, ; && and \$VAR work as over ssh;
options end at the vault name (a leading -- is dropped). The exit status is the command's
(128+N when killed by signal N; 127 not found). With -A/--argv the words run as they are,
no shell.

Examples:
  fly-vault exec my-dev 'ls / | head -2'
  fly-vault exec my-dev ls -la /root
  fly-vault exec -C /srv my-dev 'make && ./run'
  fly-vault exec --argv my-dev -- printf '%s\\n' '$HOME'    prints $HOME literally`,
    )
    .action(async (vault: string, argv: string[], opts) => {
      setStatus(
        await runExecInvocation({
          globals: { ...globals(), ...(opts.persist === false ? { persist: false } : {}) },
          vault,
          argv,
          tty: !!opts.tty,
          noStdin: opts.stdin === false,
          shell: !opts.argv,
          env: opts.env,
          cwd: opts.cwd,
        }),
      );
    });

  program.command("forward")
    .description("forward local ports into the vault without a console, until Ctrl-C")
    .argument("<vault>", "vault name from config.toml")
    .argument("[spec...]", "LPORT:HOST:RPORT or BIND:LPORT:HOST:RPORT")
    .option("-L, --forward <spec>", "the same as a SPEC operand, as with connect and ssh", collect)
    .addHelpText(
      "after",
      `
Examples:
  fly-vault forward my-dev 8080:localhost:8080
  fly-vault forward my-dev -L 8080:localhost:8080 -L 127.0.0.1:5432:localhost:5432`,
    )
    .action(async (vault: string, specs: string[], opts) => {
      setStatus(await c.forwardCommand(vault, [...opts.forward ?? [], ...specs], globals()));
    });

  program.command("pipe")
    .description("join stdin/stdout to a TCP connection made from the vault (ssh ProxyCommand)")
    .argument("<vault>", "vault name from config.toml")
    .argument("<host:port>", "where to connect, as seen from the vault")
    .addHelpText(
      "after",
      `
Example:
  ssh -o ProxyCommand='fly-vault pipe my-dev localhost:2222' root@vault`,
    )
    .action(async (vault: string, target: string) => {
      setStatus(await c.pipeCommand(vault, target, globals()));
    });

  program.command("cp")
    .description("copy files to or from the vault; vault:/path names the remote side")
    .argument("<paths...>", "SRC… DEST")
    .option("-r, --recursive", "copy directories")
    .addHelpText(
      "after",
      `
Examples:
  fly-vault cp ./notes.txt my-dev:/root/
  fly-vault cp -r ./src my-dev:/root/src
  fly-vault cp my-dev:/var/log/app.log .`,
    )
    .action(async (paths: string[], opts) => {
      setStatus(await c.copyCommand(paths, { ...globals(), recursive: opts.recursive }));
    });

  program.command("sessions")
    .description("list the vault's console sessions (they survive disconnects)")
    .argument("<vault>", "vault name from config.toml")
    .addHelpText(
      "after",
      `
Examples:
  fly-vault sessions my-dev
  fly-vault connect my-dev --session 2     attach to one of them
  fly-vault --json sessions my-dev`,
    )
    .action(async (vault: string) => {
      setStatus(await c.sessionsCommand(vault, globals()));
    });

  program.command("status")
    .description("attest, authenticate and show the vault's provisioning state")
    .argument("<vault>", "vault name from config.toml")
    .addHelpText(
      "after",
      `
Examples:
  fly-vault status my-dev
  fly-vault -v status my-dev        say each step: attesting, pinning, authenticating`,
    )
    .action(async (vault: string) => {
      setStatus(await c.statusCommand(vault, globals()));
    });

  program.command("build")
    .description(
      "build the rootfs tar.gz from a directory, an OCI/docker-save image or a Dockerfile",
    )
    .argument(
      "[source]",
      "DIR, OCI layout, docker-save tarball or Dockerfile (default ./Dockerfile)",
    )
    .option("-o, --output <file>", "where to write (default the vault's rootfs, else ~/.config/…)")
    .option("--vault <name>", "write to this vault's configured rootfs path")
    .option("--engine <docker|podman>", "container engine for a Dockerfile")
    .addHelpText(
      "after",
      `
Examples:
  fly-vault build ./Dockerfile -o dev-env.tar.gz
  fly-vault build ./rootfs-dir --vault my-dev`,
    )
    .action(async (source: string | undefined, opts) => {
      setStatus(await c.buildCommand(source, { ...globals(), ...opts }));
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
      setStatus(await c.forgetCommand(vault, globals()));
    });

  program.command("master")
    .description("the vault's master connection (config persist): show it or stop it")
    .argument("<vault>", "vault name from config.toml")
    .option(
      "--status",
      "say whether a master is running (exit 0) or not (exit 1), like ssh -O check",
    )
    .option("--stop", "end the master now, like ssh -O exit (commands in flight fail)")
    .addOption(new Option("--serve", "run the master (started by other commands)").hideHelp())
    .addHelpText(
      "after",
      `
Examples:
  fly-vault master my-dev --status
  fly-vault master my-dev --stop`,
    )
    .action(async (vault: string, opts) => {
      setStatus(await c.masterCommand(vault, { ...globals(), ...opts }));
    });

  program.command("vaults")
    .description("list the vaults in config.toml")
    .addHelpText(
      "after",
      `
Examples:
  fly-vault vaults
  fly-vault --json vaults`,
    )
    .action(async () => {
      setStatus(await c.vaultsCommand(globals()));
    });

  program.command("completion")
    .description("print a shell completion script (commands, options, vault names)")
    .argument("<shell>", "bash, zsh or fish")
    .addHelpText(
      "after",
      `
Examples:
  source <(fly-vault completion bash)                 in ~/.bashrc
  source <(fly-vault completion zsh)                  in ~/.zshrc (after compinit)
  fly-vault completion fish | source                  in ~/.config/fish/config.fish`,
    )
    .action(async (shell: string) => {
      const { completionCommand } = await import("./completion.ts");
      setStatus(completionCommand(shell));
    });

  const config = program.command("config")
    .description("edit config.toml: config add NAME writes a vault's table");
  config.command("add")
    .description("write a [vault.NAME] table; the access token is read from a prompt or stdin")
    .argument("<name>", "the vault's name")
    .requiredOption("--address <host:port>", "the vault's address")
    .requiredOption("--org <slug>", "the Fly org")
    .requiredOption("--app <name>", "the Fly app")
    .option("--machine-id <id>", "the machine, when the address is a vault-proxy")
    .option("--force", "replace an existing table of that name")
    .addHelpText(
      "after",
      `
The file is created (or kept) mode 0600; the token never goes on the command line.

Examples:
  fly-vault config add my-dev --address '[fdaa:0:1::2]:8443' --org my-org --app my-dev-vault
  fly-vault config add my-dev --address proxy.example.com:443 --org my-org --app my-dev-vault \\
    --machine-id 148e21ea7e46e8 --force < token.txt`,
    )
    .action(async (name: string, opts) => {
      const { configAddCommand } = await import("./config_add.ts");
      setStatus(await configAddCommand(name, { ...opts, config: globals().config }));
    });
  return { program, CommanderError };
}

/** Parses `args` and runs the command; resolves to the process exit status. */
export async function main(args: string[]): Promise<number> {
  const fast = fastExecArgv(args);
  if (fast) {
    try {
      return await runExecInvocation(fast);
    } catch (err) {
      const { reportError } = await import("./commands.ts");
      return reportError(err);
    }
  }
  const c = await import("./mod.ts");
  let status = 0;
  const { program, CommanderError } = await buildProgram(c, runExecInvocation, (n) => status = n);
  try {
    await program.parseAsync(execOperandsLiteral(args), { from: "user" });
  } catch (err) {
    if (err instanceof CommanderError) {
      const { commanderExit } = await import("../errors/cli.ts");
      status = commanderExit(err, program, args);
    } else {
      status = c.reportError(err);
    }
  }
  return status;
}
