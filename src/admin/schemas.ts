/**
 * zod schemas for the Fly Machines API replies the admin reads, after
 * `tests/fixtures/fly-machines-openapi.json`. Loose objects: Fly adds
 * fields often, and a new field must never break the admin; only the fields
 * we use are typed.
 *
 * @module
 */
import { z } from "zod";

/** `MachineEvent`: `timestamp` is ms since the epoch. */
export const MachineEventSchema = z.looseObject({
  id: z.string().optional(),
  type: z.string(),
  status: z.string(),
  source: z.string().optional(),
  timestamp: z.number(),
});
export type MachineEvent = z.infer<typeof MachineEventSchema>;

function isEvent(e: unknown): boolean {
  if (typeof e !== "object" || e === null) return false;
  const x = e as Record<string, unknown>;
  return typeof x.type === "string" && typeof x.status === "string" &&
    typeof x.timestamp === "number" && (x.source === undefined || typeof x.source === "string");
}

/**
 * A machine's embedded events, checked field by field like
 * {@link MachineEventSchema} but in place: a list of 5,000 machines carries
 * 100,000 events, and copying each one doubled the time and memory of
 * `usage-facts`.
 */
export const MachineEventsSchema = z.custom<MachineEvent[]>(
  (v) => Array.isArray(v) && v.every(isEvent),
  { message: "each event needs type and status (strings) and timestamp (ms, a number)" },
);

/** `fly.MachineMount`. */
export const MachineMountSchema = z.looseObject({
  volume: z.string().optional(),
  path: z.string(),
  name: z.string().optional(),
  size_gb: z.number().optional(),
});

/** `fly.MachineConfig`: only what the admin reads is typed. */
export const MachineConfigSchema = z.looseObject({
  image: z.string().optional(),
  env: z.record(z.string(), z.string()).optional(),
  metadata: z.record(z.string(), z.string()).nullish(),
  mounts: z.array(MachineMountSchema).nullish(),
});
export type MachineConfig = z.infer<typeof MachineConfigSchema>;

/** `Machine`. */
export const MachineSchema = z.looseObject({
  id: z.string(),
  name: z.string().optional(),
  state: z.string(),
  region: z.string().optional(),
  instance_id: z.string().optional(),
  private_ip: z.string().optional(),
  config: MachineConfigSchema.optional(),
  events: MachineEventsSchema.nullish(),
  created_at: z.string().optional(),
  updated_at: z.string().optional(),
});
export type Machine = z.infer<typeof MachineSchema>;

/** `Volume`. */
export const VolumeSchema = z.looseObject({
  id: z.string(),
  name: z.string(),
  state: z.string().optional(),
  size_gb: z.number(),
  region: z.string().optional(),
  attached_machine_id: z.string().nullish(),
  created_at: z.string().optional(),
});
export type Volume = z.infer<typeof VolumeSchema>;

/** `WaitMachineResponse`. */
export const WaitResponseSchema = z.looseObject({
  ok: z.boolean().optional(),
  state: z.string().optional(),
});

/** `ErrorResponse` (fly-go also reads `message`, preferring it). */
export const ErrorResponseSchema = z.looseObject({
  error: z.string().optional(),
  message: z.string().optional(),
  status: z.string().optional(),
});

/** `CreateMachineRequest` as the admin sends it. */
export interface CreateMachineRequest {
  name?: string;
  region?: string;
  config: Record<string, unknown> & {
    image: string;
    env?: Record<string, string>;
    metadata?: Record<string, string>;
    mounts?: Array<{ volume?: string; path: string; name?: string; size_gb?: number }>;
  };
  skip_launch?: boolean;
}

/** `CreateVolumeRequest` as the admin sends it. */
export interface CreateVolumeRequest {
  name: string;
  region: string;
  size_gb: number;
  encrypted?: boolean;
}
