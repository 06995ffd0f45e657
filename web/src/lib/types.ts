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
/** `DELETE /api/v1/tasks/{task_id}`. */
export type Deleted = Schemas['Deleted']

/** What the page needs from `GET /api/v1/info` (read defensively: see `limitsFromInfo`). */
export interface Limits {
  max_upload_mb: number
  max_batch: number
  scales: Array<EnhanceOptions['scale']>
  /** From `features.face_restoration`: false when the service has no GFPGAN weights. */
  face_restoration: boolean
  /** From `features.face_strength`: the server's default restoration strength (0 original face … 1 restored). */
  face_strength: number
  /** From `quality_models`: the model each quality level runs on this fleet (a level not said: absent). */
  quality_models: Partial<Record<QualityLevel, QualityModel>>
  /** From `default_quality`: the level the server uses when none is sent, preselected by the page; `fast` where
   * every enhancer runs on a CPU (high quality takes many minutes there). */
  default_quality: EnhanceOptions['quality']
}

export type QualityLevel = 'fast' | 'medium' | 'high'
/** The levels the page offers, in order. */
export const QUALITY_LEVELS: readonly QualityLevel[] = ['fast', 'medium', 'high']
/** `{model, fallback}`: fallback is a stand-in while the level's own photo model is not installed. */
export type QualityModel = Schemas['QualityModel']

/** How much of a restored face replaces the photo's own, by default (as the server's `face_strength`). */
export const DEFAULT_FACE_STRENGTH = 0.7

/** The `output_format` option: `auto` keeps a PNG (or a photo with transparency) PNG and makes the rest JPEG. */
export type OutputFormat = Schemas['TaskOptions']['output_format']
export const OUTPUT_FORMATS: readonly OutputFormat[] = ['auto', 'jpeg', 'png', 'webp', 'avif']
/** The formats `output_quality` (1–100) applies to; `auto` makes JPEG unless the photo is a PNG. */
export function usesQuality(format: OutputFormat): boolean {
  return format !== 'png'
}
export const DEFAULT_OUTPUT_QUALITY = 92

/** The options as the page holds them; `enhanceForm` sends them as the form fields the server reads. */
export interface EnhanceOptions {
  scale: 2 | 4
  faceEnhance: boolean
  quality: QualityLevel
  /** Absent: the server's default (`auto`, quality 92). */
  outputFormat?: OutputFormat
  outputQuality?: number
  /** 0 (the original face) to 1 (fully restored); sent with face restoration on. Absent: the server's default. */
  faceStrength?: number
}

/** What the page assumes until /api/v1/info answers (the server's documented defaults). */
export const DEFAULT_LIMITS: Limits = {
  max_upload_mb: 50,
  max_batch: 20,
  scales: [2, 4],
  face_restoration: true,
  face_strength: DEFAULT_FACE_STRENGTH,
  quality_models: {},
  default_quality: 'high',
}

export const DEFAULT_OPTIONS: EnhanceOptions = {
  scale: 4,
  faceEnhance: true,
  quality: 'high',
  outputFormat: 'auto',
  outputQuality: DEFAULT_OUTPUT_QUALITY,
  faceStrength: DEFAULT_FACE_STRENGTH,
}

/** A cancelled task is reported as failed with stage "cancelled". */
export function isCancelled(s: Pick<TaskStatus, 'status' | 'stage'>): boolean {
  return s.status === 'failed' && s.stage === 'cancelled'
}

export function isFinal(s: Pick<TaskStatus, 'status'>): boolean {
  return s.status === 'completed' || s.status === 'failed'
}
