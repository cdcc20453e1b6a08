/**
 * One exit-status and error-style rule for the five programs (issue 12.6):
 * 2 for a usage mistake (unknown option, missing argument, bad value), 255 for
 * the client's own failures and 1 for the other programs' failures, the
 * remote's status for `fly-vault exec`; every error printed as
 * `error[code]: … / hint: …`, commander's own included.
 *
 * @module
 */
import type { Command, CommanderError } from "commander";
import pkg from "../../package.json" with { type: "json" };
import { formatError, VaultError } from "./mod.ts";

/** Exit status for a usage mistake, in every program. */
export const EXIT_USAGE = 2;

/** The fly-vault release (package.json's version), what every `--version` prints. */
export const VERSION: string = pkg.version;

const USAGE_CODES: Record<string, string> = {
  "commander.unknownOption": "usage.unknown_option",
  "commander.unknownCommand": "usage.unknown_command",
  "commander.missingArgument": "usage.missing_argument",
  "commander.optionMissingArgument": "usage.missing_value",
  "commander.missingMandatoryOptionValue": "usage.missing_option",
  "commander.conflictingOption": "usage.conflicting_options",
  "commander.invalidArgument": "usage.bad_value",
  "commander.invalidOptionArgument": "usage.bad_value",
  "commander.excessArguments": "usage.too_many_arguments",
  "usage": "usage.bad_value",
};

/**
 * Makes commander throw instead of exiting and print none of its own errors
 * (help still prints), and adds `-V, --version`. Call on the program before
 * adding subcommands: they inherit both settings.
 */
export function ourUsageErrors<T extends Command>(program: T): T {
  program.exitOverride().configureOutput({ outputError: () => {} });
  program.version(VERSION, "-V, --version", "print the version and exit");
  return program;
}

/**
 * The exit status for a commander error, after printing it in our style
 * (`error[usage.…]: …` and `hint: see 'PROGRAM COMMAND --help'`): 0 for
 * --help and --version, else {@link EXIT_USAGE}.
 */
export function commanderExit(err: CommanderError, program: Command, args: string[]): number {
  if (err.exitCode === 0) return 0;
  // Help shown because a command was missing: commander already printed it.
  if (err.code === "commander.help") return EXIT_USAGE;
  // The (sub)command the mistake is in: commands named in order, as commander walks them.
  const path = [program.name()];
  let cmd: Command = program;
  for (const a of args) {
    const sub = cmd.commands.find((c) => a === c.name() || c.aliases().includes(a));
    if (!sub) continue;
    path.push(sub.name());
    cmd = sub;
  }
  const where = path.join(" ");
  // commander's "(Did you mean --x?)" line becomes part of the hint.
  const [first, ...more] = err.message.replace(/^error: /, "").split("\n");
  const suggestion = more.join(" ").trim().replace(/^\(Did you mean (.*)\)$/, "did you mean $1");
  const hint = `${suggestion ? `${suggestion} ` : ""}see '${where} --help'`;
  console.error(formatError(new VaultError(USAGE_CODES[err.code] ?? "usage.invalid", first, hint)));
  return EXIT_USAGE;
}

/** Whether `err` is a {@link VaultError} for a usage mistake (its code starts `usage.`). */
export function isUsageError(err: unknown): boolean {
  return err instanceof VaultError && err.code.startsWith("usage.");
}
