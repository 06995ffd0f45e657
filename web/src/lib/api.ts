import { errorFromResponse, NetworkError } from './http'
import { AbortedError } from './sleep'
import type { EnhanceOptions, Limits, SubmitResponse, TaskStatus } from './types'
import { DEFAULT_LIMITS } from './types'

/** The calls the page makes; an interface so the batch logic can be tested without a server. */
export interface Api {
  info(): Promise<Limits>
  /** Every retry of one upload sends the same `idempotencyKey`: if an answer was lost, the server
   * returns the task it already made instead of making (and charging) a second one. */
  submit(file: File, options: EnhanceOptions, signal?: AbortSignal, idempotencyKey?: string): Promise<SubmitResponse>
  status(taskId: string, signal?: AbortSignal): Promise<TaskStatus>
  cancel(taskId: string): Promise<TaskStatus>
  download(taskId: string, signal?: AbortSignal): Promise<Blob>
}

/** The form fields the server reads. */
export function enhanceForm(file: File, options: EnhanceOptions): FormData {
  const form = new FormData()
  form.append('file', file, file.name)
  form.append('scale', String(options.scale))
  form.append('face_enhance', options.faceEnhance ? 'true' : 'false')
  form.append('quality_level', options.quality)
  return form
}

/** A fresh Idempotency-Key (128 random bits; `getRandomValues` also works on plain-http origins). */
export function newIdempotencyKey(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16))
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')
}

/** Reads the limits the page needs, keeping the defaults for anything missing or odd. */
export function limitsFromInfo(body: unknown): Limits {
  const info = body as { limits?: Record<string, unknown>; features?: Record<string, unknown> } | null
  const limits = info?.limits ?? {}
  const num = (v: unknown, d: number) => (typeof v === 'number' && v > 0 ? v : d)
  const scales = Array.isArray(limits.scales) ? limits.scales.filter((s): s is number => s === 2 || s === 4) : []
  return {
    max_upload_mb: num(limits.max_upload_mb, DEFAULT_LIMITS.max_upload_mb),
    max_batch: Math.floor(num(limits.max_batch, DEFAULT_LIMITS.max_batch)),
    scales: scales.length ? scales : DEFAULT_LIMITS.scales,
    face_restoration: info?.features?.face_restoration !== false,
  }
}

export function createApi(fetchImpl: typeof fetch = (...a) => fetch(...a), base = ''): Api {
  const call = async (path: string, init: RequestInit = {}): Promise<Response> => {
    let res: Response
    try {
      res = await fetchImpl(base + path, init)
    } catch (e) {
      if (init.signal?.aborted) throw new AbortedError()
      throw new NetworkError(e instanceof Error ? e.message : String(e))
    }
    if (!res.ok) throw await errorFromResponse(res)
    return res
  }
  const id = (taskId: string) => encodeURIComponent(taskId)

  return {
    async info() {
      const res = await call('/api/v1/info')
      return limitsFromInfo(await res.json())
    },
    async submit(file, options, signal, idempotencyKey) {
      const headers: Record<string, string> = idempotencyKey ? { 'Idempotency-Key': idempotencyKey } : {}
      const res = await call('/api/v1/enhance', { method: 'POST', body: enhanceForm(file, options), signal, headers })
      return (await res.json()) as SubmitResponse
    },
    async status(taskId, signal) {
      const res = await call(`/api/v1/status/${id(taskId)}`, { signal, cache: 'no-store' })
      return (await res.json()) as TaskStatus
    },
    async cancel(taskId) {
      const res = await call(`/api/v1/tasks/${id(taskId)}/cancel`, { method: 'POST' })
      return (await res.json()) as TaskStatus
    },
    async download(taskId, signal) {
      const res = await call(`/api/v1/download/${id(taskId)}`, { signal })
      return await res.blob()
    },
  }
}
