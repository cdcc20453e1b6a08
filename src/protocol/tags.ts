/**
 * Every bidirectional stream starts with one byte saying what it is for.
 * The numbers are part of the wire protocol: never renumber, only add.
 */
export const StreamTag = {
  /** Hello, Auth, Status, Provision-by-URL, session list. Opened first on a pinned connection. */
  control: 1,
  /** Attestation: the identity certificate and a Fly OIDC token bound to it. */
  attest: 2,
  /** An interactive console session (PTY). */
  console: 3,
  /** One command: argv, stdin in, stdout/stderr out, exit status. */
  exec: 4,
  /** A TCP connection made from the VM; raw bytes after the header. */
  forward: 5,
  /** A rootfs tar.gz; raw bytes after the header, progress frames back. */
  upload: 6,
  /** File copy (`fly-vault cp`): a tar stream after the header. */
  copy: 7,
} as const;

/** One of the {@link StreamTag} values. */
export type StreamTag = typeof StreamTag[keyof typeof StreamTag];

const known = new Set<number>(Object.values(StreamTag));

/** True when `n` is a tag this version understands. */
export function isStreamTag(n: number): n is StreamTag {
  return known.has(n);
}

/** ALPN protocol id: a server or client of another major version fails the handshake cleanly. */
export const ALPN = "fly-vault/1";

/** The version carried in Hello; bumped on any incompatible message change. */
export const PROTOCOL_VERSION = 1;
