import { newIdempotencyKey, type Api } from './api'
import { followTask, type Following } from './followTask'
import { clamp, resultFileName } from './format'
import { ApiError, NetworkError } from './http'
import { canCancel, canRetry, moveTo, statusFromServer, type ItemStatus } from './itemStatus'
import { createLimiter, type Limiter } from './limiter'
import { withRetry } from './retry'
import { isAbort } from './sleep'
import type { EnhanceOptions, Limits, TaskOutput, TaskProgress, TaskStatus } from './types'
import { validateFile, type Rejection } from './validateFile'
import { buildZip } from './zip'

export type Mode = 'single' | 'batch'

/** Why an image failed when the server gave no words of its own (the page translates these). */
export type LocalErrorKey = 'network' | 'unknown'

export interface Result {
  blob: Blob
  /** Made once per result and revoked when the card goes: memory stays flat over a batch. */
  url: string
  filename: string
  contentType: string
  width: number | null
  height: number | null
  size: number
}

export interface Item {
  id: string
  file: File
  name: string
  status: ItemStatus
  /** Options it was (or will be) submitted with; a retry reuses them. */
  options: EnhanceOptions | null
  taskId: string | null
  /** The server's stage ("upscaling") or our own "downloading". */
  stage: string | null
  /** The server's stage message, shown as is. */
  message: string
  progress: number
  /** 1 = next in line. */
  queuePosition: number | null
  /** About how many seconds until the server is done with it (its `eta_seconds`); null: not known (yet). */
  etaSeconds?: number | null
  /** Seconds until an automatic retry after 429/503, while counting down. */
  retryIn: number | null
  /** The server's own error message, when it gave one. */
  error: string | null
  errorKey: LocalErrorKey | null
  /** A short note that does not change the status (a refused cancel). */
  notice: string | null
  /** The server's word that the result is (to be) enlarged less than asked, to stay under its size limits. */
  scaleNotice?: string | null
  inputUrl: string
  output: TaskOutput | null
  result: Result | null
}

export interface ObjectUrls {
  create(blob: Blob): string
  revoke(url: string): void
}

export interface BatchDeps {
  /** All network access: the calls and the event streams. */
  api: Api
  urls?: ObjectUrls
  /** Vue's `reactive`, so the cards follow the state; identity in tests. */
  reactive?: <T extends object>(o: T) => T
  /** Images in flight at once (upload + watch + download). */
  concurrency?: number
  maxTries?: number
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>
}

export interface AddResult {
  added: number
  rejected: Rejection[]
  /** Files left out because the batch was full. */
  overflow: number
}

interface Runtime {
  abort: AbortController
  following: Following | null
}

export const DEFAULT_CONCURRENCY = 3

/** The page's whole job, independent of Vue: add, start, follow, cancel, retry, remove, zip. */
export class Batch {
  readonly state: { items: Item[] }
  private readonly runtime = new Map<string, Runtime>()
  private readonly limiter: Limiter
  private readonly urls: ObjectUrls
  private nextId = 1

  constructor(private readonly deps: BatchDeps) {
    this.state = (deps.reactive ?? ((o) => o))({ items: [] as Item[] })
    this.limiter = createLimiter(deps.concurrency ?? DEFAULT_CONCURRENCY)
    this.urls = deps.urls ?? { create: (b) => URL.createObjectURL(b), revoke: (u) => URL.revokeObjectURL(u) }
  }

  get items(): Item[] {
    return this.state.items
  }

  find(id: string): Item | undefined {
    return this.state.items.find((i) => i.id === id)
  }

  /**
   * Checks and adds files. Single mode keeps one image (a new one replaces the old); batch mode
   * takes up to `limits.max_batch` in all and reports how many did not fit.
   */
  add(files: readonly File[], mode: Mode, limits: Limits): AddResult {
    const rejected: Rejection[] = []
    const valid: File[] = []
    for (const f of files) {
      const r = validateFile(f, limits.max_upload_mb)
      if (r) rejected.push(r)
      else valid.push(f)
    }
    let take: File[]
    let overflow: number
    if (mode === 'single') {
      take = valid.slice(0, 1)
      overflow = Math.max(0, valid.length - 1)
      if (take.length) this.clear()
    } else {
      const room = Math.max(0, limits.max_batch - this.state.items.length)
      take = valid.slice(0, room)
      overflow = valid.length - take.length
    }
    for (const file of take) {
      this.state.items.push({
        id: `img-${this.nextId++}`,
        file,
        name: file.name || 'image',
        status: 'pending',
        options: null,
        taskId: null,
        stage: null,
        message: '',
        progress: 0,
        queuePosition: null,
        etaSeconds: null,
        retryIn: null,
        error: null,
        errorKey: null,
        notice: null,
        scaleNotice: null,
        inputUrl: this.urls.create(file),
        output: null,
        result: null,
      })
    }
    return { added: take.length, rejected, overflow }
  }

  /** Starts every image that is waiting; returns how many it started. */
  start(options: EnhanceOptions): number {
    let started = 0
    for (const item of this.state.items) {
      if (item.status !== 'pending' || this.runtime.has(item.id)) continue
      item.options = { ...options }
      this.schedule(item)
      started++
    }
    return started
  }

  /** Sends the same File again, with the options it had. */
  retry(id: string): boolean {
    const item = this.find(id)
    if (!item || !canRetry(item.status)) return false
    this.runtime.delete(item.id)
    Object.assign(item, {
      taskId: null, stage: null, message: '', progress: 0, queuePosition: null, etaSeconds: null, retryIn: null,
      error: null, errorKey: null, notice: null, scaleNotice: null, output: null,
    })
    moveTo(item, 'pending')
    // One cancelled before "start" has no options yet; it simply waits for the next start.
    if (item.options) this.schedule(item)
    return true
  }

  /**
   * Cancels an image that has not reached a GPU. Before upload it is local; once queued the server
   * is asked, and its refusal (409: already processing) is shown on the card, which carries on.
   */
  async cancel(id: string): Promise<void> {
    const item = this.find(id)
    const rt = this.runtime.get(id)
    if (!item || !canCancel(item.status)) return
    if (item.status !== 'queued' || !item.taskId) {
      rt?.abort.abort()
      item.retryIn = null
      moveTo(item, 'cancelled')
      return
    }
    try {
      const s = await this.deps.api.cancel(item.taskId)
      rt?.following?.stop()
      rt?.abort.abort()
      this.applyStatus(item, s)
      moveTo(item, 'cancelled')
    } catch (e) {
      item.notice = e instanceof Error ? e.message : String(e)
    }
  }

  /** Drops a card: stops its work, cancels a queued task, and frees its object URLs. */
  remove(id: string): void {
    const index = this.state.items.findIndex((i) => i.id === id)
    if (index < 0) return
    const item = this.state.items[index]!
    const rt = this.runtime.get(id)
    rt?.abort.abort()
    rt?.following?.stop()
    this.runtime.delete(id)
    if (item.taskId && item.status === 'queued') void this.deps.api.cancel(item.taskId).catch(() => {})
    this.urls.revoke(item.inputUrl)
    if (item.result) this.urls.revoke(item.result.url)
    this.state.items.splice(index, 1)
  }

  clear(): void {
    for (const item of [...this.state.items]) this.remove(item.id)
  }

  /**
   * Deletes an image from the server (its photo, its result and its record; a waiting task is cancelled
   * first), then drops its card. A task the server no longer has (404) is gone already. Returns null once
   * deleted, else why not (an ApiError with the server's sentence, e.g. 409 while it is being enhanced, or a
   * NetworkError), and the card stays.
   */
  async delete(id: string): Promise<Error | null> {
    const item = this.find(id)
    if (!item) return null
    if (item.taskId) {
      try {
        await this.deps.api.delete(item.taskId)
      } catch (e) {
        if (!(e instanceof ApiError && e.status === 404)) return e instanceof Error ? e : new Error(String(e))
      }
      item.taskId = null // deleted: nothing left for remove() to cancel
    }
    this.remove(id)
    return null
  }

  completed(): Item[] {
    return this.state.items.filter((i) => i.status === 'completed' && i.result)
  }

  /** A ZIP of the results already downloaded (nothing is fetched again). */
  zip(): Promise<Blob> {
    return buildZip(this.completed().map((i) => ({ name: i.result!.filename, blob: i.result!.blob })))
  }

  private schedule(item: Item): void {
    const rt: Runtime = { abort: new AbortController(), following: null }
    this.runtime.set(item.id, rt)
    void this.limiter.run(() => this.process(item.id, rt))
  }

  private async process(id: string, rt: Runtime): Promise<void> {
    const item = this.find(id)
    const signal = rt.abort.signal
    if (!item || signal.aborted || item.status !== 'pending') return
    const { api } = this.deps
    const retry = {
      maxTries: this.deps.maxTries,
      signal,
      sleep: this.deps.sleep,
      onWait: (left: number | null) => {
        item.retryIn = left
      },
    }
    try {
      moveTo(item, 'uploading')
      const key = newIdempotencyKey() // one per submission: its automatic retries cannot make a second task
      const sub = await withRetry(() => api.submit(item.file, item.options!, signal, key), retry)
      if (signal.aborted) {
        // Cancelled while the upload was finishing: the server has it now, so tell it.
        void api.cancel(sub.task_id).catch(() => {})
        return
      }
      item.taskId = sub.task_id
      item.message = sub.message ?? ''
      moveTo(item, 'queued')

      rt.following = followTask(sub.task_id, {
        onStatus: (s) => this.applyStatus(item, s),
        onProgress: (p) => this.applyProgress(item, p),
      }, { events: (t) => api.events(t), getStatus: (t, sig) => api.status(t, sig), sleep: this.deps.sleep })
      const final = await rt.following.done
      if (final.status !== 'completed') return // applyStatus has marked it failed or cancelled

      item.stage = 'downloading'
      item.etaSeconds = null
      const blob = await withRetry(() => api.download(sub.task_id, signal), retry)
      if (signal.aborted) return
      const contentType = blob.type || final.output?.content_type || ''
      item.result = {
        blob,
        url: this.urls.create(blob),
        filename: resultFileName(item.name, final.output?.filename, contentType),
        contentType,
        width: final.output?.width ?? null,
        height: final.output?.height ?? null,
        size: blob.size,
      }
      item.progress = 1
      moveTo(item, 'completed')
    } catch (e) {
      if (signal.aborted || isAbort(e)) return
      this.fail(item, e)
    } finally {
      item.retryIn = null
      rt.following = null
    }
  }

  private fail(item: Item, e: unknown): void {
    if (e instanceof ApiError) {
      item.error = e.message
      item.errorKey = null
    } else {
      item.error = null
      item.errorKey = e instanceof NetworkError ? 'network' : 'unknown'
    }
    moveTo(item, 'failed')
  }

  private applyStatus(item: Item, s: TaskStatus): void {
    const to = statusFromServer(s)
    if (!moveTo(item, to)) return
    item.stage = s.stage
    item.message = s.message ?? ''
    item.progress = clamp(Number(s.progress) || 0, 0, 1)
    item.queuePosition = s.status === 'queued' ? s.queue_position : null
    item.etaSeconds = s.eta_seconds ?? null
    item.scaleNotice = s.notice ?? null
    if (s.output) item.output = s.output
    if (to === 'failed') {
      item.error = s.error || s.message || null
      item.errorKey = item.error ? null : 'unknown'
    }
  }

  private applyProgress(item: Item, p: TaskProgress): void {
    // A progress message means a GPU has the image, even if its status record is not here yet.
    if (item.status === 'queued') moveTo(item, 'processing')
    if (item.status !== 'processing') return
    item.stage = p.stage
    item.message = p.message ?? item.message
    item.progress = clamp(Number(p.progress) || 0, 0, 1)
    item.queuePosition = null
    if (p.eta_seconds !== undefined) item.etaSeconds = p.eta_seconds
  }
}
