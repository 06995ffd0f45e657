import type { Locale } from '../i18n/messages'
import type { paths } from './api-types'
import { errorFromResponse, field, NetworkError } from './http'
import { AbortedError } from './sleep'
import type { Deleted, EnhanceOptions, Limits, SubmitResponse, TaskProgress, TaskStatus } from './types'
import { DEFAULT_LIMITS, usesQuality } from './types'

/** The part of EventSource the page uses (so tests can hand in a fake). */
export interface EventSourceLike {
  addEventListener(type: string, listener: (ev: MessageEvent) => void): void
  close(): void
}

export type OpenEventSource = (url: string) => EventSourceLike

/** A task's server-sent events, their data typed by the contract. */
export interface TaskEvents {
  onStatus(listener: (s: TaskStatus) => void): void
  onProgress(listener: (p: TaskProgress) => void): void
  /** The stream failed or was cut (the page then polls instead of letting EventSource reconnect). */
  onError(listener: () => void): void
  close(): void
}

/** The calls the page makes; an interface so the batch logic can be tested without a server. */
export interface Api {
  info(): Promise<Limits>
  /** Every retry of one upload sends the same `idempotencyKey`: if an answer was lost, the server
   * returns the task it already made instead of making (and charging) a second one. */
  submit(file: File, options: EnhanceOptions, signal?: AbortSignal, idempotencyKey?: string): Promise<SubmitResponse>
  status(taskId: string, signal?: AbortSignal): Promise<TaskStatus>
  cancel(taskId: string): Promise<TaskStatus>
  /** Deletes the task on the server now: its photo, its result and its record (409 while it is being enhanced). */
  delete(taskId: string): Promise<Deleted>
  download(taskId: string, signal?: AbortSignal): Promise<Blob>
  /** The task's event stream, or null where the browser has no EventSource (then the page polls). */
  events(taskId: string): TaskEvents | null
}

/** What a route answers with 200, as the server's OpenAPI document (`api-types.ts`) describes it. */
export type Answer<P extends keyof paths, M extends keyof paths[P]> = paths[P][M] extends {
  responses: { 200: { content: { 'application/json': infer Body } } }
}
  ? Body
  : never

/** The JSON of an answer, typed by its route's place in the contract (the server validates what it sends). */
async function answer<P extends keyof paths, M extends keyof paths[P]>(res: Response): Promise<Answer<P, M>> {
  return res.json()
}

/** Typed events over an EventSource; data that is not JSON is skipped, as a stream of unknown events would be. */
export function taskEvents(source: EventSourceLike): TaskEvents {
  const on = <T>(type: 'status' | 'progress', listener: (data: T) => void) =>
    source.addEventListener(type, (ev) => {
      if (typeof ev.data !== 'string') return
      let data: T
      try {
        data = JSON.parse(ev.data)
      } catch {
        return
      }
      listener(data)
    })
  return {
    onStatus: (listener) => on<TaskStatus>('status', listener),
    onProgress: (listener) => on<TaskProgress>('progress', listener),
    onError: (listener) => source.addEventListener('error', () => listener()),
    close: () => source.close(),
  }
}

/** The browser's EventSource, where there is one. */
export const browserEventSource: OpenEventSource | null =
  typeof EventSource === 'function' ? (url) => new EventSource(url) : null

/** The form fields the server reads. */
export function enhanceForm(file: File, options: EnhanceOptions): FormData {
  const form = new FormData()
  form.append('file', file, file.name)
  form.append('scale', String(options.scale))
  form.append('face_enhance', options.faceEnhance ? 'true' : 'false')
  form.append('quality_level', options.quality)
  if (options.faceEnhance && options.faceStrength !== undefined && Number.isFinite(options.faceStrength)) {
    form.append('face_strength', String(Math.min(1, Math.max(0, options.faceStrength))))
  }
  if (options.outputFormat) form.append('output_format', options.outputFormat)
  if (options.outputQuality !== undefined && usesQuality(options.outputFormat ?? 'auto')) {
    form.append('output_quality', String(Math.round(Math.min(100, Math.max(1, options.outputQuality)))))
  }
  return form
}

/** A fresh Idempotency-Key (128 random bits; `getRandomValues` also works on plain-http origins). */
export function newIdempotencyKey(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16))
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')
}

/** Reads the limits the page needs, keeping the defaults for anything missing or odd. */
export function limitsFromInfo(body: unknown): Limits {
  const limits = field(body, 'limits')
  const num = (v: unknown, d: number) => (typeof v === 'number' && v > 0 ? v : d)
  const offered = field(limits, 'scales')
  const scales = Array.isArray(offered) ? offered.filter((s): s is 2 | 4 => s === 2 || s === 4) : []
  return {
    max_upload_mb: num(field(limits, 'max_upload_mb'), DEFAULT_LIMITS.max_upload_mb),
    max_batch: Math.floor(num(field(limits, 'max_batch'), DEFAULT_LIMITS.max_batch)),
    scales: scales.length ? scales : DEFAULT_LIMITS.scales,
    face_restoration: field(field(body, 'features'), 'face_restoration') !== false,
    face_strength: fraction(field(field(body, 'features'), 'face_strength'), DEFAULT_LIMITS.face_strength),
    quality_models: qualityModels(field(body, 'quality_models')),
    default_quality: defaultQuality(field(body, 'default_quality')),
  }
}

/** `default_quality` of `/api/v1/info`, among the levels the page offers (fast, high); else the page's default. */
function defaultQuality(v: unknown): Limits['default_quality'] {
  return v === 'fast' || v === 'high' ? v : DEFAULT_LIMITS.default_quality
}

function fraction(v: unknown, d: number): number {
  return typeof v === 'number' && v >= 0 && v <= 1 ? v : d
}

/** `quality_models` of `/api/v1/info`, keeping only well-formed entries of the levels the page knows. */
function qualityModels(body: unknown): Limits['quality_models'] {
  const out: Limits['quality_models'] = {}
  for (const level of ['fast', 'medium', 'high'] as const) {
    const entry = field(body, level)
    const model = field(entry, 'model')
    if (typeof model === 'string' && model) out[level] = { model, fallback: field(entry, 'fallback') === true }
  }
  return out
}

/** The `Accept-Language` the page sends: the server answers its sentences (errors, progress) in it. */
export function acceptLanguage(locale: Locale): string {
  return locale === 'zh' ? 'zh-CN,zh;q=0.9' : 'en'
}

/**
 * Every request the page makes goes through here: `fetch` for the calls, `openEvents` for event streams.
 * Each asks for the server's sentences in the page's language (`language()`, read at each call, so the
 * language switch takes effect at once): `Accept-Language` on the calls, `?lang=` on the event streams
 * (an EventSource cannot set headers).
 */
export function createApi(
  fetchImpl: typeof fetch = (...a) => fetch(...a),
  base = '',
  openEvents: OpenEventSource | null = browserEventSource,
  language: () => Locale = () => 'zh',
): Api {
  const call = async (path: string, init: RequestInit & { headers?: Record<string, string> } = {}): Promise<Response> => {
    let res: Response
    try {
      res = await fetchImpl(base + path, { ...init, headers: { ...init.headers, 'Accept-Language': acceptLanguage(language()) } })
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
      return answer<'/api/v1/enhance', 'post'>(res)
    },
    async status(taskId, signal) {
      const res = await call(`/api/v1/status/${id(taskId)}`, { signal, cache: 'no-store' })
      return answer<'/api/v1/status/{task_id}', 'get'>(res)
    },
    async cancel(taskId) {
      const res = await call(`/api/v1/tasks/${id(taskId)}/cancel`, { method: 'POST' })
      return answer<'/api/v1/tasks/{task_id}/cancel', 'post'>(res)
    },
    async delete(taskId) {
      const res = await call(`/api/v1/tasks/${id(taskId)}`, { method: 'DELETE' })
      return answer<'/api/v1/tasks/{task_id}', 'delete'>(res)
    },
    async download(taskId, signal) {
      const res = await call(`/api/v1/download/${id(taskId)}`, { signal })
      return await res.blob()
    },
    events(taskId) {
      return openEvents ? taskEvents(openEvents(`${base}/api/v1/events/${id(taskId)}?lang=${language()}`)) : null
    },
  }
}
