/** Small statistics for benchmark reports. */

/** The q-quantile (0..1) of `xs` by nearest rank. */
export function quantile(xs: number[], q: number): number {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

/** Median. */
export const median = (xs: number[]) => quantile(xs, 0.5);

/**
 * Wall time of running `argv` to completion, in ms; throws when it fails.
 * With `clearEnv`, the command gets exactly `env` (nothing inherited).
 */
export async function timeCommand(
  argv: string[],
  env?: Record<string, string>,
  { clearEnv = false } = {},
): Promise<number> {
  const started = performance.now();
  const out = await new Deno.Command(argv[0], {
    args: argv.slice(1),
    env,
    clearEnv,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).output();
  const ms = performance.now() - started;
  if (!out.success) {
    throw new Error(`${argv.join(" ")} failed: ${new TextDecoder().decode(out.stderr)}`);
  }
  return ms;
}

/** Alternates runs of several commands (so drift hits all alike) and returns each one's samples. */
export async function interleave(
  commands: Record<string, () => Promise<number>>,
  rounds: number,
): Promise<Record<string, number[]>> {
  const samples: Record<string, number[]> = Object.fromEntries(
    Object.keys(commands).map((k) => [k, []]),
  );
  for (let i = 0; i < rounds; i++) {
    for (const [name, run] of Object.entries(commands)) samples[name].push(await run());
  }
  return samples;
}
