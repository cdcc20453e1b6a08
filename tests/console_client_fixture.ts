/**
 * The console client as a program, for tests that drive it through a real
 * PTY: `deno run -A tests/console_client_fixture.ts PORT [SESSION]`.
 * Connects to a loopback test server and reconnects to it when dropped.
 */
import { runConsole } from "../src/console/mod.ts";
import { formatError } from "../src/errors/mod.ts";
import { loopbackOpen } from "./console_loopback.ts";

const port = Number(Deno.args[0]);
const open = (tag: Parameters<typeof loopbackOpen>[1]) => loopbackOpen(port, tag);
try {
  const result = await runConsole(open, {
    session: Deno.args[1],
    reopen: () => Promise.resolve(open),
    backoffMs: { initial: 50, max: 500 },
  });
  console.log(`[fixture] ended ${JSON.stringify(result)}`);
  Deno.exit(result.exit?.code ?? 0);
} catch (err) {
  console.error(formatError(err));
  Deno.exit(1);
}
