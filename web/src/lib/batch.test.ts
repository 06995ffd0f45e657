import { unzipSync } from 'fflate'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import type { Api } from './api'
import { Batch } from './batch'
import { ApiError, NetworkError } from './http'
import { completed, FakeEventSource, fakeEvents, flush, status } from './testing'
import type { EnhanceOptions, Limits, SubmitResponse, TaskStatus } from './types'
import { DEFAULT_LIMITS } from './types'

const LIMITS: Limits = { ...DEFAULT_LIMITS, max_upload_mb: 1, max_batch: 20, scales: [2, 4], face_restoration: true }
const OPTIONS: EnhanceOptions = { scale: 2, faceEnhance: false, quality: 'fast' }
const png = (name: string, size = 10) => new File([new Uint8Array(size)], name, { type: 'image/png' })

/** A pretend server: tasks finish when the test says so, through their event streams. */
function fakeServer() {
  let n = 0
  const inFlight = { submits: 0, peak: 0 }
  const submitGate: { hold: Promise<void> | null } = { hold: null }
  const api = {
    info: vi.fn(async () => LIMITS),
    submit: vi.fn(async (_file: File, _o: EnhanceOptions, _signal?: AbortSignal, _key?: string): Promise<SubmitResponse> => {
      inFlight.peak = Math.max(inFlight.peak, ++inFlight.submits)
      try {
        if (submitGate.hold) await submitGate.hold
        return { task_id: `t${++n}`, status: 'queued', message: 'Queued', created_at: 1_700_000_000 }
      } finally {
        inFlight.submits--
      }
    }),
    status: vi.fn(async (id: string): Promise<TaskStatus> => status(id)),
    cancel: vi.fn(async (id: string): Promise<TaskStatus> =>
      status(id, { status: 'failed', stage: 'cancelled', message: 'Cancelled', queue_position: null })),
    delete: vi.fn(async (id: string) => ({ success: true, task_id: id, deleted: true })),
    download: vi.fn(async (id: string) => new Blob([id], { type: 'image/png' })),
    events: vi.fn(fakeEvents),
  } satisfies Api
  const stream = (taskId: string) => FakeEventSource.opened.find((s) => s.url.endsWith(`/${taskId}`))!
  return { api, inFlight, submitGate, stream }
}

function urls() {
  let n = 0
  const live = new Set<string>()
  return {
    live,
    create: vi.fn((_b: Blob) => {
      const u = `blob:${++n}`
      live.add(u)
      return u
    }),
    revoke: vi.fn((u: string) => void live.delete(u)),
  }
}

function setup(concurrency = 3) {
  const server = fakeServer()
  const objectUrls = urls()
  const batch = new Batch({
    api: server.api,
    urls: objectUrls,
    concurrency,
  })
  return { ...server, batch, objectUrls }
}

beforeEach(() => {
  FakeEventSource.opened = []
})

describe('Batch', () => {
  it('processes a whole batch, a few at a time, each result downloaded once', async () => {
    const { batch, api, stream, objectUrls, inFlight } = setup(2)
    batch.add([png('a.png'), png('b.png'), png('a.png'), png('c.png'), png('d.png')], 'batch', LIMITS)
    expect(batch.start(OPTIONS)).toBe(5)
    await flush()
    // Only two images are in flight; the others wait their turn on the page.
    expect(batch.items.map((i) => i.status)).toEqual(['queued', 'queued', 'pending', 'pending', 'pending'])
    expect(inFlight.peak).toBeLessThanOrEqual(2)

    for (let done = 1; done <= 5; done++) {
      const id = `t${done}`
      stream(id).emit('progress', { task_id: id, stage: 'upscaling', progress: 0.4, message: 'Upscaling tile 2/5' })
      const item = batch.items.find((i) => i.taskId === id)!
      expect(item.status).toBe('processing')
      expect(item.message).toBe('Upscaling tile 2/5')
      stream(id).emit('status', completed(id, `${item.name.replace('.png', '')}_enhanced.png`))
      await flush()
      expect(item.status).toBe('completed') // shown the moment it is ready
    }
    expect(api.download).toHaveBeenCalledTimes(5)
    expect(new Set(api.download.mock.calls.map((c) => c[0])).size).toBe(5)
    expect(batch.items[0]!.result).toMatchObject({ filename: 'a_enhanced.png', width: 800, height: 600 })
    expect(api.submit.mock.calls[0]![1]).toEqual(OPTIONS)

    const zip = unzipSync(new Uint8Array(await (await batch.zip()).arrayBuffer()))
    expect(Object.keys(zip).sort()).toEqual([
      'a_enhanced-2.png', 'a_enhanced.png', 'b_enhanced.png', 'c_enhanced.png', 'd_enhanced.png',
    ])
    expect(api.download).toHaveBeenCalledTimes(5) // the ZIP fetched nothing again

    // 5 inputs + 5 results, each made once; clearing frees every one.
    expect(objectUrls.create).toHaveBeenCalledTimes(10)
    batch.clear()
    expect(objectUrls.live.size).toBe(0)
    expect(batch.items).toHaveLength(0)
  })

  it("shows the server's own message when it refuses a file, and the rest carry on", async () => {
    const { batch, api, stream } = setup()
    api.submit.mockRejectedValueOnce(new ApiError(415, '不支持的图片格式'))
    batch.add([png('bad.png'), png('good.png')], 'batch', LIMITS)
    batch.start(OPTIONS)
    await flush()
    expect(batch.items[0]).toMatchObject({ status: 'failed', error: '不支持的图片格式' })
    stream('t1').emit('status', completed('t1'))
    await flush()
    expect(batch.items[1]!.status).toBe('completed')
  })

  it("keeps the server's word that the result is enlarged less than asked", async () => {
    const { batch, stream } = setup()
    batch.add([png('big.png')], 'batch', LIMITS)
    batch.start(OPTIONS)
    await flush()
    const notice = '为不超过结果 64 百万像素的上限，放大了 ×2.29，而不是 ×4。'
    stream('t1').emit('status', status('t1', { output_scale: 2.29, notice }))
    await flush()
    expect(batch.items[0]).toMatchObject({ status: 'queued', scaleNotice: notice })
    stream('t1').emit('status', { ...completed('t1'), output_scale: 2.29, notice })
    await flush()
    expect(batch.items[0]).toMatchObject({ status: 'completed', scaleNotice: notice })
  })

  it("follows the server's estimate of the time left, from its status and its live progress", async () => {
    const { batch, stream } = setup()
    batch.add([png('a.png')], 'batch', LIMITS)
    batch.start(OPTIONS)
    await flush()
    stream('t1').emit('status', status('t1', { queue_position: 2, eta_seconds: 95 }))
    await flush()
    expect(batch.items[0]).toMatchObject({ status: 'queued', etaSeconds: 95 })
    stream('t1').emit('progress', { task_id: 't1', stage: 'upscaling', progress: 0.5, message: 'tile 3/6', eta_seconds: 40 })
    await flush()
    expect(batch.items[0]).toMatchObject({ status: 'processing', etaSeconds: 40 })
    // An older server's progress says nothing of it: the last estimate stays.
    stream('t1').emit('progress', { task_id: 't1', stage: 'upscaling', progress: 0.6, message: 'tile 4/6' })
    await flush()
    expect(batch.items[0]!.etaSeconds).toBe(40)
    stream('t1').emit('status', completed('t1'))
    await flush()
    expect(batch.items[0]).toMatchObject({ status: 'completed', etaSeconds: null })
  })

  it('marks a task the server failed with its error text', async () => {
    const { batch, stream } = setup()
    batch.add([png('a.png')], 'batch', LIMITS)
    batch.start(OPTIONS)
    await flush()
    stream('t1').emit('status', status('t1', { status: 'failed', stage: 'failed', error: 'Image too large', queue_position: null }))
    await flush()
    expect(batch.items[0]).toMatchObject({ status: 'failed', error: 'Image too large' })
  })

  describe('when the server is busy', () => {
    beforeEach(() => vi.useFakeTimers())
    afterEach(() => vi.useRealTimers())

    it('counts down the Retry-After, then uploads again by itself', async () => {
      const { batch, api } = setup()
      api.submit.mockRejectedValueOnce(new ApiError(429, 'Too many requests', 2))
      batch.add([png('a.png')], 'batch', LIMITS)
      batch.start(OPTIONS)
      await vi.advanceTimersByTimeAsync(0)
      const item = batch.items[0]!
      expect(item).toMatchObject({ status: 'uploading', retryIn: 2 })
      await vi.advanceTimersByTimeAsync(1000)
      expect(item.retryIn).toBe(1)
      await vi.advanceTimersByTimeAsync(1000)
      expect(api.submit).toHaveBeenCalledTimes(2)
      // The same upload again: the same Idempotency-Key, so a lost answer cannot make a second task.
      expect(api.submit.mock.calls[0]![3]).toMatch(/^[0-9a-f]{32}$/)
      expect(api.submit.mock.calls[1]![3]).toBe(api.submit.mock.calls[0]![3])
      expect(item).toMatchObject({ status: 'queued', retryIn: null })
    })
  })

  it('cancels a queued image on the server', async () => {
    const { batch, api, stream } = setup()
    batch.add([png('a.png')], 'batch', LIMITS)
    batch.start(OPTIONS)
    await flush()
    await batch.cancel(batch.items[0]!.id)
    expect(api.cancel).toHaveBeenCalledWith('t1')
    expect(batch.items[0]!.status).toBe('cancelled')
    expect(stream('t1').closed).toBe(true)
  })

  it("keeps following an image whose cancel the server refused, showing why", async () => {
    const { batch, api, stream } = setup()
    api.cancel.mockRejectedValueOnce(new ApiError(409, 'The task is already processing'))
    batch.add([png('a.png')], 'batch', LIMITS)
    batch.start(OPTIONS)
    await flush()
    await batch.cancel(batch.items[0]!.id)
    expect(batch.items[0]).toMatchObject({ status: 'queued', notice: 'The task is already processing' })
    stream('t1').emit('status', completed('t1'))
    await flush()
    expect(batch.items[0]!.status).toBe('completed')
  })

  it('cancels a waiting image without asking the server, and ignores it from then on', async () => {
    const { batch, api } = setup(1)
    batch.add([png('a.png'), png('b.png')], 'batch', LIMITS)
    batch.start(OPTIONS)
    await flush()
    await batch.cancel(batch.items[1]!.id)
    expect(batch.items[1]!.status).toBe('cancelled')
    expect(api.cancel).not.toHaveBeenCalled()
    expect(api.submit).toHaveBeenCalledTimes(1)
  })

  it('retries a failed image by sending the same File again', async () => {
    const { batch, api, stream } = setup()
    api.submit.mockRejectedValueOnce(new ApiError(400, 'Could not read the image'))
    const file = png('a.png')
    batch.add([file], 'batch', LIMITS)
    batch.start(OPTIONS)
    await flush()
    expect(batch.items[0]!.status).toBe('failed')
    expect(batch.retry(batch.items[0]!.id)).toBe(true)
    await flush()
    expect(api.submit).toHaveBeenCalledTimes(2)
    expect(api.submit.mock.calls[1]![0]).toBe(file)
    expect(api.submit.mock.calls[1]![3]).not.toBe(api.submit.mock.calls[0]![3]) // a new attempt, a new key
    expect(batch.items[0]).toMatchObject({ status: 'queued', error: null })
    stream('t1').emit('status', completed('t1'))
    await flush()
    expect(batch.items[0]!.status).toBe('completed')
  })

  it('removing a queued image cancels it on the server and frees its URLs', async () => {
    const { batch, api, objectUrls } = setup()
    batch.add([png('a.png')], 'batch', LIMITS)
    batch.start(OPTIONS)
    await flush()
    batch.remove(batch.items[0]!.id)
    expect(api.cancel).toHaveBeenCalledWith('t1')
    expect(objectUrls.live.size).toBe(0)
    expect(batch.items).toHaveLength(0)
  })

  describe('deleting from the server', () => {
    async function finished() {
      const s = setup()
      s.batch.add([png('a.png'), png('b.png')], 'batch', LIMITS)
      s.batch.start(OPTIONS)
      await flush()
      s.stream('t1').emit('status', completed('t1'))
      await flush()
      expect(s.batch.items[0]!.status).toBe('completed')
      return s
    }

    it('deletes the task on the server, then the card and its URLs go', async () => {
      const { batch, api, objectUrls } = await finished()
      const before = objectUrls.live.size
      expect(await batch.delete(batch.items[0]!.id)).toBeNull()
      expect(api.delete).toHaveBeenCalledWith('t1')
      expect(api.cancel).not.toHaveBeenCalled()
      expect(batch.items.map((i) => i.name)).toEqual(['b.png'])
      expect(objectUrls.live.size).toBe(before - 2) // its photo and its result
    })

    it('keeps the card and says why when the server refuses', async () => {
      const { batch, api } = await finished()
      const refusal = new ApiError(409, '这张照片正在处理中，请等处理完成后再删除。', 10)
      api.delete.mockRejectedValueOnce(refusal)
      expect(await batch.delete(batch.items[1]!.id)).toBe(refusal)
      expect(batch.items).toHaveLength(2)
      api.delete.mockRejectedValueOnce(new NetworkError('offline'))
      expect(await batch.delete(batch.items[0]!.id)).toBeInstanceOf(NetworkError)
      expect(batch.items).toHaveLength(2)
    })

    it('drops the card of a task the server no longer has', async () => {
      const { batch, api } = await finished()
      api.delete.mockRejectedValueOnce(new ApiError(404, 'Task not found.'))
      expect(await batch.delete(batch.items[0]!.id)).toBeNull()
      expect(batch.items).toHaveLength(1)
    })
  })

  it('checks files before upload and keeps to the batch limit', () => {
    const { batch } = setup()
    const limits = { ...LIMITS, max_batch: 2 }
    const r = batch.add(
      [png('a.png'), new File(['x'], 'b.gif', { type: 'image/gif' }), png('huge.png', 2 * 1024 * 1024), png('c.png'), png('d.png')],
      'batch', limits,
    )
    expect(r.added).toBe(2)
    expect(r.overflow).toBe(1)
    expect(r.rejected.map((x) => x.reason)).toEqual(['type', 'size'])
    expect(batch.items.map((i) => i.name)).toEqual(['a.png', 'c.png'])
  })

  it('keeps one image in single mode: a new one replaces the old', () => {
    const { batch, objectUrls } = setup()
    batch.add([png('a.png')], 'single', LIMITS)
    batch.add([png('b.png'), png('c.png')], 'single', LIMITS)
    expect(batch.items.map((i) => i.name)).toEqual(['b.png'])
    expect(objectUrls.live.size).toBe(1)
  })
})
