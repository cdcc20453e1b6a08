/**
 * Imported first by `bin/fly-vault.ts`, before any schema is built: zod 4
 * compiles a fast path (`new Function`) for each object schema on its first
 * parse, which pays off in a long-lived server but is pure start-up cost in a
 * client that parses each schema once or twice. The interpreted path
 * validates exactly the same.
 *
 * @module
 */
import { z } from "zod";

z.config({ jitless: true });
