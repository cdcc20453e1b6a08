/**
 * A small Fly Machines API client: bearer auth, every reply validated, and
 * retries with exponential backoff and jitter on 429 (honouring
 * Retry-After), 408, 5xx and network errors, all inside one deadline per call.
 *
 * Creating a machine or a volume is not idempotent on Fly, so those calls
 * retry only what Fly refused outright (429); an ambiguous failure (5xx,
 * dropped connection) is raised as `fly.ambiguous` and the caller re-lists
 * before trying again. That is what keeps `tenant create` free of duplicates.
 *
 * @module
 */
import { z } from "zod";
import { readBoundedText } from "../attest/mod.ts";
import { VaultError } from "../errors/mod.ts";
import { checkApiBase } from "./api_base.ts";
import {
  type CreateMachineRequest,
  type CreateVolumeRequest,
  ErrorResponseSchema,
  type Machine,
  type MachineEvent,
  MachineEventSchema,
  MachineSchema,
  type Volume,
  VolumeSchema,
  WaitResponseSchema,
} from "./schemas.ts";

/**
 * The longest reply read: a list of 5,000 machines with their events is ~30 MiB; a reply
 * without end must not be read into memory until the deadline.
 */
const MAX_REPLY_BYTES = 128 * 1024 * 1024;

/** The public Machines API. */
export const DEFAULT_API_BASE = "https://api.machines.dev";

/** A Machines API failure: the request, Fly's status and message. */
export class FlyApiError extends VaultError {
  override name = "FlyApiError";
  /** HTTP status, or 0 for a network error or timeout. */
  readonly status: number;
  /** `METHOD /v1/path` (never the token). */
  readonly request: string;
  /** Fly's `status` field, e.g. `name_taken`, when it sent one. */
  readonly flyStatus: string | undefined;
  constructor(
    code: string,
    status: number,
    request: string,
    message: string,
    hint: string,
    flyStatus?: string,
    options?: ErrorOptions,
  ) {
    super(code, message, hint, options);
    this.status = status;
    this.request = request;
    this.flyStatus = flyStatus;
  }
}

/** True for a 404 from the API. */
export function isNotFound(err: unknown): boolean {
  return err instanceof FlyApiError && err.status === 404;
}

/** Options of {@link createFlyClient}. */
export interface FlyClientOptions {
  /** e.g. `https://api.machines.dev` (paths get `/v1`). */
  apiBase?: string;
  token: string;
  app: string;
  /** Total time one call may take, retries included (default 120 s). */
  deadlineMs?: number;
  /** Time one HTTP attempt may take (default 30 s; waits get their own timeout on top). */
  attemptTimeoutMs?: number;
  /** First backoff delay (default 250 ms), doubled each retry up to `maxBackoffMs`. */
  baseBackoffMs?: number;
  /** Largest backoff delay (default 5 s). */
  maxBackoffMs?: number;
  /** Longest Retry-After honoured (default 30 s). */
  maxRetryAfterMs?: number;
  /** Called before each retry (for `--verbose` and tests). */
  onRetry?: (info: { request: string; attempt: number; delayMs: number; reason: string }) => void;
}

type Retry = "all" | "refused";

interface CallOptions<T> {
  query?: Record<string, string | number | boolean | undefined>;
  body?: unknown;
  schema?: z.ZodType<T>;
  /** "refused": retry only 429 (the server did nothing). */
  retry?: Retry;
  /** Extra time the server may legitimately hold the request (wait). */
  extraTimeoutMs?: number;
}

/** Machines list filters. */
export interface ListMachinesOptions {
  /** `metadata.KEY=VALUE` filters. */
  metadata?: Record<string, string>;
  includeDeleted?: boolean;
  region?: string;
  state?: string;
  summary?: boolean;
}

/** The client. */
export interface FlyClient {
  readonly app: string;
  readonly apiBase: string;
  listMachines(opts?: ListMachinesOptions): Promise<Machine[]>;
  getMachine(id: string): Promise<Machine>;
  createMachine(req: CreateMachineRequest): Promise<Machine>;
  updateMachine(id: string, req: CreateMachineRequest): Promise<Machine>;
  startMachine(id: string): Promise<void>;
  stopMachine(id: string, opts?: { signal?: string; timeout?: string }): Promise<void>;
  /** Blocks until the machine reaches `state` (server-side wait, retried until the deadline). */
  waitMachine(
    id: string,
    opts: { state: string; timeoutSec?: number; instanceId?: string },
  ): Promise<void>;
  deleteMachine(id: string, opts?: { force?: boolean }): Promise<void>;
  machineEvents(id: string, limit?: number): Promise<MachineEvent[]>;
  listVolumes(): Promise<Volume[]>;
  getVolume(id: string): Promise<Volume>;
  createVolume(req: CreateVolumeRequest): Promise<Volume>;
  deleteVolume(id: string): Promise<void>;
}

const retryableStatus = (s: number) => s === 408 || s === 429 || s >= 500;

/** Parses Retry-After (seconds or an HTTP date) into ms; undefined when absent or bad. */
export function parseRetryAfter(value: string | null, now = Date.now()): number | undefined {
  if (value === null || value.trim() === "") return undefined;
  const secs = Number(value);
  if (Number.isFinite(secs)) return Math.max(0, secs * 1000);
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Creates a client for one app. */
export function createFlyClient(opts: FlyClientOptions): FlyClient {
  const apiBase = checkApiBase(opts.apiBase ?? DEFAULT_API_BASE);
  const deadlineMs = opts.deadlineMs ?? 120_000;
  const attemptTimeoutMs = opts.attemptTimeoutMs ?? 30_000;
  const baseBackoff = opts.baseBackoffMs ?? 250;
  const maxBackoff = opts.maxBackoffMs ?? 5_000;
  const maxRetryAfter = opts.maxRetryAfterMs ?? 30_000;
  const appPath = `/v1/apps/${encodeURIComponent(opts.app)}`;

  async function call<T>(method: string, path: string, c: CallOptions<T> = {}): Promise<T> {
    const qs = new URLSearchParams();
    for (const [k, v] of Object.entries(c.query ?? {})) if (v !== undefined) qs.set(k, String(v));
    const fullPath = appPath + path + (qs.size ? `?${qs}` : "");
    const request = `${method} ${fullPath}`;
    const started = Date.now();
    // What Fly last said: a final attempt cut short by the deadline should not hide it.
    let lastReply: FlyApiError | undefined;
    for (let attempt = 1;; attempt++) {
      let failure: FlyApiError | undefined;
      let retryAfterMs: number | undefined;
      const remaining = deadlineMs - (Date.now() - started);
      const timeout = Math.max(1, Math.min(remaining, attemptTimeoutMs + (c.extraTimeoutMs ?? 0)));
      try {
        const res = await fetch(apiBase + fullPath, {
          method,
          headers: {
            authorization: `Bearer ${opts.token}`,
            accept: "application/json",
            ...(c.body !== undefined ? { "content-type": "application/json" } : {}),
          },
          body: c.body !== undefined ? JSON.stringify(c.body) : undefined,
          signal: AbortSignal.timeout(timeout),
        });
        const text = await readBoundedText(res.body, MAX_REPLY_BYTES);
        if (text === undefined) {
          throw new FlyApiError(
            "fly.bad_reply",
            res.status,
            request,
            `${request}: ${res.status} reply longer than ${MAX_REPLY_BYTES >> 20} MiB`,
            "is --api-base the Machines API?",
          );
        }
        if (res.ok) {
          if (!c.schema) return undefined as T;
          let json: unknown;
          try {
            json = text === "" ? null : JSON.parse(text);
          } catch {
            throw new FlyApiError(
              "fly.bad_reply",
              res.status,
              request,
              `${request}: ${res.status} reply is not JSON`,
              "is --api-base the Machines API?",
            );
          }
          const parsed = c.schema.safeParse(json);
          if (!parsed.success) {
            const issue = parsed.error.issues[0];
            throw new FlyApiError(
              "fly.bad_reply",
              res.status,
              request,
              `${request}: unexpected reply shape at ${issue?.path.join(".") || "(root)"}: ${
                issue?.message ?? "invalid"
              }`,
              "is --api-base the Machines API?",
            );
          }
          return parsed.data;
        }
        failure = errorFromReply(request, res.status, text);
        retryAfterMs = parseRetryAfter(res.headers.get("retry-after"));
        const retryable = c.retry === "refused" ? res.status === 429 : retryableStatus(res.status);
        if (!retryable) {
          if (res.status >= 500 || res.status === 408) {
            throw new FlyApiError(
              "fly.ambiguous",
              res.status,
              request,
              failure.message,
              "the request may or may not have taken effect; re-run the command",
              failure.flyStatus,
            );
          }
          throw failure;
        }
      } catch (err) {
        if (err instanceof FlyApiError) {
          throw err;
        } else {
          const why = err instanceof DOMException && err.name === "TimeoutError"
            ? `no reply within ${Math.round(timeout / 1000)}s`
            : (err instanceof Error ? err.message : String(err));
          failure = new FlyApiError(
            c.retry === "refused" ? "fly.ambiguous" : "fly.unreachable",
            0,
            request,
            `${request}: ${why}`,
            `check the network and --api-base (${apiBase})`,
            undefined,
            { cause: err },
          );
          if (c.retry === "refused") throw failure;
        }
      }
      if (failure!.status !== 0) lastReply = failure;
      const last = failure!.status === 0 && lastReply ? lastReply : failure!;
      const backoff = Math.min(maxBackoff, baseBackoff * 2 ** (attempt - 1));
      // Full jitter between half and all of the backoff, so many admins do not retry in step.
      let delay = backoff / 2 + Math.random() * backoff / 2;
      if (retryAfterMs !== undefined) {
        delay = Math.min(retryAfterMs, maxRetryAfter) + Math.random() * 50;
      }
      // Retry only if the next attempt would still have a fair share of the deadline.
      const minAttempt = Math.min(1_000, deadlineMs / 4);
      if (Date.now() - started + delay + minAttempt >= deadlineMs) {
        throw new FlyApiError(
          last.code,
          last.status,
          request,
          `${last.message} (gave up after ${attempt} attempts in ${
            ((Date.now() - started) / 1000).toFixed(1)
          }s)`,
          last.hint,
          last.flyStatus,
          { cause: failure },
        );
      }
      opts.onRetry?.({ request, attempt, delayMs: Math.round(delay), reason: last.message });
      await sleep(delay);
    }
  }

  const m = (id: string) => `/machines/${encodeURIComponent(id)}`;
  const v = (id: string) => `/volumes/${encodeURIComponent(id)}`;

  return {
    app: opts.app,
    apiBase,
    listMachines(o = {}) {
      const query: Record<string, string | boolean | undefined> = {
        include_deleted: o.includeDeleted || undefined,
        region: o.region,
        state: o.state,
        summary: o.summary || undefined,
      };
      for (const [k, val] of Object.entries(o.metadata ?? {})) query[`metadata.${k}`] = val;
      return call("GET", "/machines", { query, schema: z.array(MachineSchema) });
    },
    getMachine: (id) => call("GET", m(id), { schema: MachineSchema }),
    createMachine: (req) =>
      call("POST", "/machines", { body: req, schema: MachineSchema, retry: "refused" }),
    updateMachine: (id, req) => call("POST", m(id), { body: req, schema: MachineSchema }),
    startMachine: (id) => call("POST", `${m(id)}/start`),
    stopMachine: (id, o) => call("POST", `${m(id)}/stop`, o ? { body: o } : {}),
    waitMachine: async (id, o) => {
      const timeoutSec = Math.min(60, Math.max(1, o.timeoutSec ?? 60));
      await call("GET", `${m(id)}/wait`, {
        query: { state: o.state, timeout: timeoutSec, instance_id: o.instanceId },
        schema: WaitResponseSchema,
        extraTimeoutMs: timeoutSec * 1000,
      });
    },
    deleteMachine: (id, o) =>
      call("DELETE", m(id), { query: { force: o?.force ? true : undefined } }),
    machineEvents: (id, limit) =>
      call("GET", `${m(id)}/events`, { query: { limit }, schema: z.array(MachineEventSchema) }),
    listVolumes: () => call("GET", "/volumes", { schema: z.array(VolumeSchema) }),
    getVolume: (id) => call("GET", v(id), { schema: VolumeSchema }),
    createVolume: (req) =>
      call("POST", "/volumes", { body: req, schema: VolumeSchema, retry: "refused" }),
    deleteVolume: async (id) => {
      await call("DELETE", v(id));
    },
  };
}

function errorFromReply(request: string, status: number, text: string): FlyApiError {
  let detail = text.trim().slice(0, 300);
  let flyStatus: string | undefined;
  try {
    const parsed = ErrorResponseSchema.safeParse(JSON.parse(text));
    if (parsed.success) {
      detail = parsed.data.message ?? parsed.data.error ?? detail;
      flyStatus = parsed.data.status;
    }
  } catch { /* not JSON: quote the text */ }
  const hints: Record<number, string> = {
    401: "check --api-token / FLY_API_TOKEN (e.g. `fly tokens deploy`)",
    403: "the token may not have access to this app",
    404: "check --app / FLY_APP and the id",
    422: "the request was refused as invalid; check the template",
    429: "Fly is rate limiting; try again shortly",
  };
  const code = status === 401 || status === 403
    ? "fly.unauthorized"
    : status === 404
    ? "fly.not_found"
    : status === 429
    ? "fly.rate_limited"
    : status >= 500
    ? "fly.server_error"
    : "fly.rejected";
  return new FlyApiError(
    code,
    status,
    request,
    `${request}: ${status}${flyStatus ? ` ${flyStatus}` : ""}: ${JSON.stringify(detail || "")}`,
    hints[status] ?? (status >= 500 ? "Fly had a problem; re-run the command" : ""),
    flyStatus,
  );
}
