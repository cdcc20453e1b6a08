/**
 * `pipe` as a program for ssh's ProxyCommand in tests:
 * `deno run -A tests/forward_pipe_fixture.ts LOOPBACK_PORT HOST:PORT`.
 */
import { runPipe } from "../src/forward/mod.ts";
import { formatError } from "../src/errors/mod.ts";
import { loopbackOpen } from "./console_loopback.ts";

const port = Number(Deno.args[0]);
try {
  await runPipe((tag) => loopbackOpen(port, tag), Deno.args[1]);
  Deno.exit(0);
} catch (err) {
  console.error(formatError(err));
  Deno.exit(1);
}
