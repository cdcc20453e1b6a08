/**
 * `fly-vault completion bash|zsh|fish`: a script that completes commands,
 * options and vault names. Vault names are read from config.toml by the
 * shell itself (the `[vault.NAME]` headers), so a completion never waits for
 * Deno to start.
 *
 * @module
 */
import { VaultError } from "../errors/mod.ts";

/** A command as completion sees it. */
export interface CompletionSpec {
  name: string;
  description: string;
  options: string[];
  /** The first operand is a vault name. */
  vault: boolean;
}

/** Every command and its options (kept beside the commander definitions by cli_test). */
export const COMMANDS: CompletionSpec[] = [
  {
    name: "connect",
    description: "open a console in the vault",
    options: ["-L", "--forward", "--reprovision", "--new", "--session", "--wake", "--api-base"],
    vault: true,
  },
  {
    name: "exec",
    description: "run a command in the vault",
    options: [
      "-t",
      "--tty",
      "-A",
      "--argv",
      "-n",
      "--no-stdin",
      "-e",
      "--env",
      "-C",
      "--cwd",
      "--no-persist",
    ],
    vault: true,
  },
  {
    name: "forward",
    description: "forward local ports into the vault",
    options: ["-L", "--forward"],
    vault: true,
  },
  {
    name: "pipe",
    description: "stdin/stdout to a TCP connection from the vault",
    options: [],
    vault: true,
  },
  {
    name: "cp",
    description: "copy files to or from the vault",
    options: ["-r", "--recursive"],
    vault: false,
  },
  { name: "sessions", description: "list the vault's console sessions", options: [], vault: true },
  { name: "status", description: "show the vault's provisioning state", options: [], vault: true },
  {
    name: "wake",
    description: "start a suspended or stopped vault",
    options: ["--api-base", "--wake-timeout"],
    vault: true,
  },
  {
    name: "build",
    description: "build the rootfs tar.gz",
    options: ["-o", "--output", "--vault", "--engine"],
    vault: false,
  },
  { name: "forget", description: "drop a vault's pinned identity", options: [], vault: true },
  {
    name: "master",
    description: "show or stop the master connection",
    options: ["--status", "--stop"],
    vault: true,
  },
  { name: "vaults", description: "list the vaults in config.toml", options: [], vault: false },
  {
    name: "config",
    description: "write a vault's table (config add NAME …)",
    options: ["--address", "--org", "--app", "--machine-id", "--force"],
    vault: false,
  },
  { name: "completion", description: "print a shell completion script", options: [], vault: false },
  { name: "help", description: "help for a command", options: [], vault: false },
];

/** Options every command takes. */
export const GLOBAL_OPTIONS = [
  "-c",
  "--config",
  "-v",
  "--verbose",
  "--json",
  "--connect-timeout",
  "--no-persist",
  "-h",
  "--help",
  "--version",
];

// The shell function listing vault names from the config the command line or the environment names.
const CONFIG_DIR_SH =
  "${FLY_VAULT_CONFIG_DIR:-${XDG_CONFIG_HOME:-$HOME/.config}/fly-vault}/config.toml";
const VAULTS_SED =
  `sed -n 's/^[[:space:]]*\\[vault\\.["'"'"']\\{0,1\\}\\([A-Za-z0-9_.-]*\\)["'"'"']\\{0,1\\}[[:space:]]*\\].*/\\1/p'`;

function bash(): string {
  const cases = COMMANDS.map((c) =>
    `    ${c.name}) opts="${c.options.join(" ")}"; wantvault=${c.vault ? 1 : 0} ;;`
  ).join("\n");
  return `# fly-vault completion for bash: source <(fly-vault completion bash)
_fly_vault_vaults() {
  local cfg="${CONFIG_DIR_SH}" i
  for ((i = 1; i < \${#COMP_WORDS[@]} - 1; i++)); do
    case "\${COMP_WORDS[i]}" in -c|--config) cfg="\${COMP_WORDS[i+1]}" ;; esac
  done
  [ -r "$cfg" ] && ${VAULTS_SED} "$cfg"
}
_fly_vault() {
  local cur="\${COMP_WORDS[COMP_CWORD]}" prev="\${COMP_WORDS[COMP_CWORD-1]}"
  local cmd="" i n=0 opts="" wantvault=0
  case "$prev" in
    -c|--config|-o|--output) COMPREPLY=($(compgen -f -- "$cur")); return ;;
  esac
  for ((i = 1; i < COMP_CWORD; i++)); do
    case "\${COMP_WORDS[i]}" in
      -c|--config|--connect-timeout) ((i++)) ;;
      -*) ;;
      *) if [ -z "$cmd" ]; then cmd="\${COMP_WORDS[i]}"; else ((n++)); fi ;;
    esac
  done
  if [ -z "$cmd" ]; then
    if [[ "$cur" == -* ]]; then
      COMPREPLY=($(compgen -W "${GLOBAL_OPTIONS.join(" ")}" -- "$cur"))
    else
      COMPREPLY=($(compgen -W "${COMMANDS.map((c) => c.name).join(" ")}" -- "$cur"))
    fi
    return
  fi
  case "$cmd" in
${cases}
  esac
  if [[ "$cur" == -* ]]; then
    COMPREPLY=($(compgen -W "$opts ${GLOBAL_OPTIONS.join(" ")}" -- "$cur"))
  elif [ "$cmd" = completion ] && [ $n -eq 0 ]; then
    COMPREPLY=($(compgen -W "bash zsh fish" -- "$cur"))
  elif [ "$cmd" = config ] && [ $n -eq 0 ]; then
    COMPREPLY=($(compgen -W "add" -- "$cur"))
  elif [ "$cmd" = help ]; then
    COMPREPLY=($(compgen -W "${COMMANDS.map((c) => c.name).join(" ")}" -- "$cur"))
  elif [ $wantvault = 1 ] && [ $n -eq 0 ]; then
    COMPREPLY=($(compgen -W "$(_fly_vault_vaults)" -- "$cur"))
  elif [ "$cmd" = cp ]; then
    COMPREPLY=($(compgen -f -- "$cur") $(compgen -W "$(_fly_vault_vaults | sed 's/$/:/')" -- "$cur"))
  else
    COMPREPLY=($(compgen -f -- "$cur"))
  fi
}
complete -F _fly_vault fly-vault
`;
}

function zsh(): string {
  const cmds = COMMANDS.map((c) => `    '${c.name}:${c.description.replaceAll("'", "")}'`).join(
    "\n",
  );
  const cases = COMMANDS.map((c) =>
    `      ${c.name}) opts=(${c.options.join(" ")}); wantvault=${c.vault ? 1 : 0} ;;`
  ).join("\n");
  return `#compdef fly-vault
# fly-vault completion for zsh: source <(fly-vault completion zsh)
_fly_vault_vaults() {
  local cfg="${CONFIG_DIR_SH}"
  [[ -r $cfg ]] && ${VAULTS_SED} "$cfg"
}
_fly_vault() {
  local -a commands opts
  local wantvault=0
  commands=(
${cmds}
  )
  if (( CURRENT == 2 )); then
    if [[ $words[CURRENT] == -* ]]; then
      compadd -- ${GLOBAL_OPTIONS.join(" ")}
    else
      _describe 'command' commands
    fi
    return
  fi
  case $words[2] in
${cases}
  esac
  if [[ $words[CURRENT] == -* ]]; then
    compadd -- $opts ${GLOBAL_OPTIONS.join(" ")}
  elif [[ $words[2] == completion ]]; then
    compadd -- bash zsh fish
  elif [[ $words[2] == config ]] && (( CURRENT == 3 )); then
    compadd -- add
  elif (( wantvault )) && (( CURRENT == 3 )); then
    compadd -- \${(f)"$(_fly_vault_vaults)"}
  else
    _files
  fi
}
if (( $+functions[compdef] )); then compdef _fly_vault fly-vault; fi
`;
}

function fish(): string {
  const lines = [
    "# fly-vault completion for fish: fly-vault completion fish | source",
    "function __fly_vault_vaults",
    `    set -l cfg (set -q FLY_VAULT_CONFIG_DIR; and echo $FLY_VAULT_CONFIG_DIR; or begin; set -q XDG_CONFIG_HOME; and echo $XDG_CONFIG_HOME/fly-vault; or echo $HOME/.config/fly-vault; end)/config.toml`,
    `    test -r $cfg; and ${VAULTS_SED} $cfg`,
    "end",
    "complete -c fly-vault -f",
  ];
  const all = COMMANDS.map((c) => c.name).join(" ");
  for (const c of COMMANDS) {
    lines.push(
      `complete -c fly-vault -n "not __fish_seen_subcommand_from ${all}" -a ${c.name} -d '${
        c.description.replaceAll("'", "")
      }'`,
    );
    if (c.vault) {
      lines.push(
        `complete -c fly-vault -n "__fish_seen_subcommand_from ${c.name}" -a "(__fly_vault_vaults)"`,
      );
    }
    for (const o of c.options) {
      const flag = o.startsWith("--") ? `-l ${o.slice(2)}` : `-s ${o.slice(1)}`;
      lines.push(`complete -c fly-vault -n "__fish_seen_subcommand_from ${c.name}" ${flag}`);
    }
  }
  lines.push(
    `complete -c fly-vault -n "__fish_seen_subcommand_from completion" -a "bash zsh fish"`,
    `complete -c fly-vault -n "__fish_seen_subcommand_from config" -a add`,
  );
  for (const o of GLOBAL_OPTIONS) {
    lines.push(
      `complete -c fly-vault ${o.startsWith("--") ? `-l ${o.slice(2)}` : `-s ${o.slice(1)}`}`,
    );
  }
  return lines.join("\n") + "\n";
}

/** The completion script for `shell`. */
export function completionScript(shell: string): string {
  if (shell === "bash") return bash();
  if (shell === "zsh") return zsh();
  if (shell === "fish") return fish();
  throw new VaultError(
    "usage.bad_shell",
    `no completion for shell '${shell}'`,
    "fly-vault completion bash | zsh | fish",
  );
}

/** `fly-vault completion SHELL`. */
export function completionCommand(shell: string): number {
  Deno.stdout.writeSync(new TextEncoder().encode(completionScript(shell)));
  return 0;
}
