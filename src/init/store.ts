/**
 * The minimal vault store: where the rootfs lives and what state it is in,
 * read from `/data/vault/state.json` (written by provisioning). Before
 * anything was provisioned, a rootfs laid out by hand (tests, the demo)
 * counts as ready.
 *
 * @module
 */
import { join } from "node:path";
import { existsSync, readFileSync } from "node:fs";
import { z } from "zod";
import { VaultState } from "../protocol/mod.ts";
import type { VaultStore } from "./server.ts";

const StateFile = z.object({
  state: VaultState,
  reason: z.string().optional(),
  provisioned_at: z.string().optional(),
  sha256: z.string().optional(),
});

/** A store over `dataDir` that only reads state. */
export function openBasicStore(dataDir: string): VaultStore {
  const rootfsDir = join(dataDir, "rootfs");
  const stateFile = join(dataDir, "vault", "state.json");
  return {
    rootfsDir,
    status() {
      if (existsSync(stateFile)) {
        const parsed = StateFile.safeParse(JSON.parse(readFileSync(stateFile, "utf8")));
        if (parsed.success) return parsed.data;
        return { state: "failed", reason: "state.json is unreadable" };
      }
      return existsSync(join(rootfsDir, "bin")) || existsSync(join(rootfsDir, "usr"))
        ? { state: "ready" }
        : { state: "unprovisioned" };
    },
  };
}
