/**
 * `fly-vault build`: rootfs tar.gz files for provisioning.
 *
 * ```ts
 * const r = await buildRootfs({ source: "./Dockerfile", onProgress: (p) => … });
 * // r.output, r.sha256 (for rootfs_url configs), r.workload (declared command, if any)
 * ```
 *
 * Sources (`kind: "auto"` picks by looking): a rootfs directory (packed by
 * GNU tar with numeric owners and xattrs), an OCI image layout directory or
 * archive, a `docker save` tarball (layers merged bottom to top, whiteouts
 * applied, the config's Entrypoint/Cmd/Env/WorkingDir/User written to
 * `/.fly-vault/image.json` as the workload declaration), or a Dockerfile,
 * built and saved through docker or podman (`build.no_engine` when neither
 * works). Errors are VaultErrors with codes `build.*`; a rootfs the vault
 * cannot run commands in (no `/usr/bin/env`, no `/bin/sh`) builds with
 * `warnings` (`build.no_env`, `build.no_shell`).
 *
 * @module
 */
export {
  type BuildOptions,
  type BuildProgress,
  type BuildResult,
  buildRootfs,
  type BuildSourceKind,
  type BuildWarning,
  defaultOutput,
} from "./build.ts";
export { type ImageDeclaration, resolveImage } from "./image.ts";
export { type BuildReporter, buildReporter } from "./progress.ts";
