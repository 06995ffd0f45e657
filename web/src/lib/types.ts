/**
 * The server's JSON, as the edge's OpenAPI document describes it: `api-types.ts` is generated from that
 * document (`make web-types`), so these names follow the server and are never copied by hand.
 */
import type { components } from './api-types'

type Schemas = components['schemas']

/** `GET /api/v1/status/{task_id}`, a cancel's answer, and the `status` event of the event stream. */
export type TaskStatus = Schemas['TaskStatus']
export type ServerStatus = TaskStatus['status']
export type TaskOutput = Schemas['TaskOutput']
/** The `progress` event of the event stream. */
export type TaskProgress = Schemas['TaskProgress']
/** `POST /api/v1/enhance`. */
export type SubmitResponse = Schemas['Accepted']

/** What the page needs from `GET /api/v1/info` (read defensively: see `limitsFromInfo`). */
export interface Limits {
  max_upload_mb: number
  max_batch: number
  scales: Array<EnhanceOptions['scale']>
  /** From `features.face_restoration`: false when the service has no GFPGAN weights. */
  face_restoration: boolean
}

/** The options as the page holds them; `enhanceForm` sends them as the form fields the server reads. */
export interface EnhanceOptions {
  scale: 2 | 4
  faceEnhance: boolean
  quality: 'fast' | 'high'
}

/** What the page assumes until /api/v1/info answers (the server's documented defaults). */
export const DEFAULT_LIMITS: Limits = { max_upload_mb: 50, max_batch: 20, scales: [2, 4], face_restoration: true }

export const DEFAULT_OPTIONS: EnhanceOptions = { scale: 4, faceEnhance: true, quality: 'high' }

/** A cancelled task is reported as failed with stage "cancelled". */
export function isCancelled(s: Pick<TaskStatus, 'status' | 'stage'>): boolean {
  return s.status === 'failed' && s.stage === 'cancelled'
}

export function isFinal(s: Pick<TaskStatus, 'status'>): boolean {
  return s.status === 'completed' || s.status === 'failed'
}
