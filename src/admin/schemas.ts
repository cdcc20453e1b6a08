/**
 * zod schemas for the Fly Machines API replies the admin reads, after
 * `shared/reference/fly-machines-openapi.json`. Loose objects: Fly adds
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
  events: z.array(MachineEventSchema).nullish(),
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
