/**
 * zod schemas for every message on the wire. Each stream kind has its own
 * request/reply unions; every schema is strict, so an unknown field or
 * message type is a protocol error rather than silently ignored input.
 *
 * @module
 */
import { z } from "zod";

const Signal = z.string().regex(/^SIG[A-Z0-9]+$/).max(16);
const Env = z.record(z.string().min(1).max(256), z.string().max(32_768));
const Cols = z.number().int().min(1).max(10_000);

/** A failure the server reports on any stream; `code` is stable, `hint` optional. */
export const ErrorMessage = z.strictObject({
  type: z.literal("error"),
  code: z.string().max(64),
  message: z.string().max(4096),
  hint: z.string().max(4096).optional(),
});
export type ErrorMessage = z.infer<typeof ErrorMessage>;

/** Provisioning states (DESIGN §6). */
export const VaultState = z.enum(["unprovisioned", "provisioning", "ready", "failed"]);
export type VaultState = z.infer<typeof VaultState>;

// ---- attest stream ---------------------------------------------------------

export const AttestRequest = z.strictObject({ type: z.literal("attest") });
export const Attestation = z.strictObject({
  type: z.literal("attestation"),
  /** The identity CA certificate, DER, base64. */
  identity: z.string().max(16_384),
  /** A Fly OIDC JWT whose aud binds to `identity`. */
  token: z.string().max(16_384),
});
export type Attestation = z.infer<typeof Attestation>;
export const AttestReply = z.discriminatedUnion("type", [Attestation, ErrorMessage]);

// ---- control stream --------------------------------------------------------

export const Hello = z.strictObject({
  type: z.literal("hello"),
  protocol: z.number().int().min(0),
  client: z.string().max(128),
});
export const Auth = z.strictObject({ type: z.literal("auth"), token: z.string().max(4096) });
export const StatusRequest = z.strictObject({ type: z.literal("status") });
export const ProvisionUrl = z.strictObject({
  type: z.literal("provision_url"),
  url: z.string().url().max(4096),
  sha256: z.string().regex(/^[0-9a-f]{64}$/).optional(),
});
export const SessionsRequest = z.strictObject({ type: z.literal("sessions") });

/** Everything a client may send on the control stream after Hello+Auth. */
export const ControlRequest = z.discriminatedUnion("type", [
  StatusRequest,
  ProvisionUrl,
  SessionsRequest,
]);
export type ControlRequest = z.infer<typeof ControlRequest>;

export const AuthOk = z.strictObject({
  type: z.literal("auth_ok"),
  protocol: z.number().int(),
  machine_id: z.string().max(64),
  state: VaultState,
  reason: z.string().max(4096).optional(),
});
export type AuthOk = z.infer<typeof AuthOk>;
export const AuthReply = z.discriminatedUnion("type", [AuthOk, ErrorMessage]);

export const Status = z.strictObject({
  type: z.literal("status"),
  state: VaultState,
  reason: z.string().max(4096).optional(),
  provisioned_at: z.string().max(64).optional(),
  sha256: z.string().max(64).optional(),
});
export type Status = z.infer<typeof Status>;

export const SessionInfo = z.strictObject({
  id: z.string().max(64),
  started: z.string().max(64),
  idle_seconds: z.number().min(0),
  command: z.string().max(4096),
  attached: z.boolean(),
});
export type SessionInfo = z.infer<typeof SessionInfo>;
export const Sessions = z.strictObject({
  type: z.literal("sessions"),
  sessions: z.array(SessionInfo).max(10_000),
});

/** Progress of a provision (upload or URL), sent as it happens. */
export const Progress = z.strictObject({
  type: z.literal("progress"),
  phase: z.enum(["download", "receive", "extract", "verify", "swap", "workload"]),
  done: z.number().min(0),
  total: z.number().min(0).optional(),
  note: z.string().max(4096).optional(),
});
export type Progress = z.infer<typeof Progress>;

export const ProvisionDone = z.strictObject({
  type: z.literal("provision_done"),
  sha256: z.string().max(64),
  bytes: z.number().min(0),
  entries: z.number().int().min(0),
  seconds: z.number().min(0),
  notes: z.array(z.string().max(4096)).max(100).optional(),
});
export type ProvisionDone = z.infer<typeof ProvisionDone>;

export const ControlReply = z.discriminatedUnion("type", [
  Status,
  Sessions,
  Progress,
  ProvisionDone,
  ErrorMessage,
]);
export type ControlReply = z.infer<typeof ControlReply>;

// ---- exec stream -----------------------------------------------------------

export const ExecRequest = z.strictObject({
  type: z.literal("exec"),
  argv: z.array(z.string().max(131_072)).min(1).max(4096),
  /**
   * Run `argv` (one string, the words joined as ssh joins them) with the vault
   * user's login shell, `SHELL -c argv[0]`. Absent: `argv` runs as is. Sent only
   * when true, so an argv-mode request still suits an init without this field.
   */
  shell: z.literal(true).optional(),
  /**
   * A random id for this command (a client through its master): init runs an
   * id at most once, so a request retried on the client's own connection after
   * its master's stream failed never runs twice. Sent only to an init known to
   * take it (the master asks first): an older init refuses unknown fields.
   */
  id: z.string().regex(/^[0-9a-f]{32}$/).optional(),
  env: Env.default({}),
  cwd: z.string().max(4096).optional(),
  tty: z.boolean().default(false),
  term: z.string().max(64).optional(),
  cols: Cols.optional(),
  rows: Cols.optional(),
});
export type ExecRequest = z.infer<typeof ExecRequest>;

export const Resize = z.strictObject({ type: z.literal("resize"), cols: Cols, rows: Cols });
export const Eof = z.strictObject({ type: z.literal("eof") });
export const SignalRequest = z.strictObject({ type: z.literal("signal"), signal: Signal });

/** Client → server messages after the exec or console header. */
export const SessionInput = z.discriminatedUnion("type", [Resize, Eof, SignalRequest]);
export type SessionInput = z.infer<typeof SessionInput>;

export const Started = z.strictObject({ type: z.literal("started"), pid: z.number().int() });
export const Exit = z.strictObject({
  type: z.literal("exit"),
  code: z.number().int().nullable(),
  signal: Signal.nullable(),
});
export type Exit = z.infer<typeof Exit>;

/** Server → client messages on exec and console streams. */
export const SessionOutput = z.discriminatedUnion("type", [Started, Exit, ErrorMessage]);
export type SessionOutput = z.infer<typeof SessionOutput>;

// ---- console stream --------------------------------------------------------

export const ConsoleRequest = z.strictObject({
  type: z.literal("console"),
  /** Attach to this session, or `"new"`; absent = the most recent live session, else new. */
  session: z.string().max(64).optional(),
  term: z.string().max(64).default("xterm-256color"),
  cols: Cols,
  rows: Cols,
  env: Env.default({}),
});
export type ConsoleRequest = z.infer<typeof ConsoleRequest>;

export const Attached = z.strictObject({
  type: z.literal("attached"),
  session: z.string().max(64),
  created: z.boolean(),
});
export const ConsoleOutput = z.discriminatedUnion("type", [Attached, Exit, ErrorMessage]);

// ---- forward stream --------------------------------------------------------

export const ForwardRequest = z.strictObject({
  type: z.literal("forward"),
  host: z.string().min(1).max(255),
  port: z.number().int().min(1).max(65_535),
});
export type ForwardRequest = z.infer<typeof ForwardRequest>;
export const ForwardOk = z.strictObject({ type: z.literal("forward_ok") });
export const ForwardReply = z.discriminatedUnion("type", [ForwardOk, ErrorMessage]);

// ---- upload stream ---------------------------------------------------------

export const UploadRequest = z.strictObject({
  type: z.literal("upload"),
  size: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
});
export type UploadRequest = z.infer<typeof UploadRequest>;
export const UploadReply = z.discriminatedUnion("type", [Progress, ProvisionDone, ErrorMessage]);
