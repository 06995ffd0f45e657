/** The server's JSON, as the API contract describes it (only the fields the page reads). */

export type ServerStatus = 'queued' | 'processing' | 'completed' | 'failed'

export interface TaskOutput {
  filename: string | null
  content_type: string | null
  width: number | null
  height: number | null
  size: number | null
  engine?: string | null
  faces?: number | null
}

export interface TaskStatus {
  task_id: string
  status: ServerStatus
  stage: string | null
  message: string | null
  progress: number
  error: string | null
  queue_position: number | null
  result_url?: string | null
  processing_time?: number | null
  input?: { filename: string | null; width: number | null; height: number | null; size: number | null }
  output: TaskOutput | null
}

export interface TaskProgress {
  task_id: string
  stage: string | null
  progress: number
  message: string | null
}

export interface SubmitResponse {
  task_id: string
  status: ServerStatus
  message?: string
  created_at?: number
}

export interface Limits {
  max_upload_mb: number
  max_batch: number
  scales: number[]
  /** From `features.face_restoration`: false when the service has no GFPGAN weights. */
  face_restoration: boolean
}

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
