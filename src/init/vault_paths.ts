/**
 * Messages init sends a client speak in the vault's paths, never the
 * machine's: a path under the rootfs reads as the vault sees it (`/usr/x`),
 * anything else under the volume as `<volume>/…`. A safety net under every
 * error reply: whatever an OS error or a lower layer put in a message, the
 * client learns nothing of the machine's layout (issue 12.7).
 *
 * @module
 */

let rules: Array<{ pattern: RegExp; as: (rest: string) => string }> = [];

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

/** Sets the machine's directories to hide: the rootfs (read as `/`) and the volume holding it. */
export function hideMachinePaths(dirs: { rootfsDir: string; dataDir?: string }): void {
  const trim = (d: string) => d.replace(/\/+$/, "");
  // Longest first: the rootfs lies inside the volume.
  rules = [
    {
      pattern: new RegExp(`${escape(trim(dirs.rootfsDir))}(?![\\w.-])(/[^\\s'"]*)?`, "g"),
      as: (rest) => rest || "/",
    },
    ...(dirs.dataDir
      ? [{
        pattern: new RegExp(`${escape(trim(dirs.dataDir))}(?![\\w.-])(/[^\\s'"]*)?`, "g"),
        as: (rest: string) => `<volume>${rest}`,
      }]
      : []),
  ];
}

/** `text` with the machine's paths rewritten as the vault's (see {@link hideMachinePaths}). */
export function inVaultPaths(text: string): string;
export function inVaultPaths(text: string | undefined): string | undefined;
export function inVaultPaths(text: string | undefined): string | undefined {
  if (text === undefined) return text;
  for (const { pattern, as } of rules) text = text.replace(pattern, (_, rest) => as(rest ?? ""));
  return text;
}
