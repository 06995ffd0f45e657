import { describe, expect, expectTypeOf, it, vi } from 'vitest'
import { createApi, enhanceForm, limitsFromInfo, newIdempotencyKey, type Answer, type Api } from './api'
import { ApiError } from './http'
import { completed, FakeEventSource, status } from './testing'
import type { SubmitResponse, TaskProgress, TaskStatus } from './types'

describe('limitsFromInfo', () => {
  it('reads the limits and whether faces can be restored', () => {
    expect(limitsFromInfo({ limits: { max_upload_mb: 10, max_batch: 5, scales: [2, 4] }, features: { face_restoration: false } }))
      .toEqual({ max_upload_mb: 10, max_batch: 5, scales: [2, 4], face_restoration: false })
  })
  it('keeps the defaults for anything missing', () => {
    expect(limitsFromInfo({})).toEqual({ max_upload_mb: 50, max_batch: 20, scales: [2, 4], face_restoration: true })
  })
  it('keeps them for anything odd', () => {
    const defaults = { max_upload_mb: 50, max_batch: 20, scales: [2, 4], face_restoration: true }
    expect(limitsFromInfo(null)).toEqual(defaults)
    expect(limitsFromInfo('busy')).toEqual(defaults)
    expect(limitsFromInfo({ limits: { max_upload_mb: -1, max_batch: '5', scales: [3] }, features: null })).toEqual(defaults)
  })
})

describe('api', () => {
  it('sends the options as the form fields the server reads', () => {
    const form = enhanceForm(new File(['x'], 'a.png', { type: 'image/png' }), { scale: 2, faceEnhance: false, quality: 'fast' })
    expect(form.get('scale')).toBe('2')
    expect(form.get('face_enhance')).toBe('false')
    expect(form.get('quality_level')).toBe('fast')
    expect((form.get('file') as File).name).toBe('a.png')
  })
  it("turns a refusal into an error with the server's message", async () => {
    const fetchMock = vi.fn(async () => new Response(JSON.stringify({ error: 'File too large (max 50 MB)' }), { status: 413 }))
    const api = createApi(fetchMock as unknown as typeof fetch)
    const err = await api.submit(new File(['x'], 'a.png'), { scale: 4, faceEnhance: true, quality: 'high' }).catch((e) => e)
    expect(err).toBeInstanceOf(ApiError)
    expect(err).toMatchObject({ status: 413, message: 'File too large (max 50 MB)' })
    expect(fetchMock).toHaveBeenCalledWith('/api/v1/enhance', expect.objectContaining({ method: 'POST' }))
  })
  it('sends the Idempotency-Key it is given, and makes fresh 128-bit ones', async () => {
    const fetchMock = vi.fn(async () => new Response(JSON.stringify({ task_id: 'a'.repeat(32), status: 'queued' })))
    const api = createApi(fetchMock as unknown as typeof fetch)
    const key = newIdempotencyKey()
    await api.submit(new File(['x'], 'a.png'), { scale: 4, faceEnhance: false, quality: 'high' }, undefined, key)
    const init = (fetchMock.mock.calls[0] as unknown as [string, RequestInit])[1]
    expect(init.headers).toEqual({ 'Idempotency-Key': key })
    expect(key).toMatch(/^[0-9a-f]{32}$/)
    expect(newIdempotencyKey()).not.toBe(key)
  })
})

describe('the calls are typed by the contract (api-types.ts, generated from the server)', () => {
  it('answers with the generated types, not copies', () => {
    // Each call reads its route's 200 answer from the generated document (never `never`: a route that
    // lost its JSON schema would make any type fit).
    expectTypeOf<Answer<'/api/v1/status/{task_id}', 'get'>>().toEqualTypeOf<TaskStatus>()
    expectTypeOf<Answer<'/api/v1/tasks/{task_id}/cancel', 'post'>>().toEqualTypeOf<TaskStatus>()
    expectTypeOf<Answer<'/api/v1/enhance', 'post'>>().toEqualTypeOf<SubmitResponse>()
    expectTypeOf<Awaited<ReturnType<Api['status']>>>().toEqualTypeOf<TaskStatus>()
    expectTypeOf<Awaited<ReturnType<Api['cancel']>>>().toEqualTypeOf<TaskStatus>()
    expectTypeOf<Awaited<ReturnType<Api['submit']>>>().toEqualTypeOf<SubmitResponse>()
    expectTypeOf<TaskStatus['status']>().toEqualTypeOf<'queued' | 'processing' | 'completed' | 'failed'>()
  })
  it('reads a status body as the server sends it', async () => {
    const body = completed('t1')
    const fetchMock = vi.fn(async () => new Response(JSON.stringify(body)))
    const api = createApi(fetchMock as unknown as typeof fetch)
    await expect(api.status('t1')).resolves.toEqual(body)
    expect(fetchMock).toHaveBeenCalledWith('/api/v1/status/t1', expect.objectContaining({ cache: 'no-store' }))
  })
})

describe('event streams go through the API layer too', () => {
  const open = (url: string) => new FakeEventSource(url)

  it("opens the task's stream under the same base, the id escaped", () => {
    FakeEventSource.opened = []
    createApi(vi.fn() as unknown as typeof fetch, 'https://example.test', open).events('a/b')
    expect(FakeEventSource.opened.map((s) => s.url)).toEqual(['https://example.test/api/v1/events/a%2Fb'])
  })
  it('hands on typed status and progress, skips what is not JSON, and closes', () => {
    FakeEventSource.opened = []
    const events = createApi(vi.fn() as unknown as typeof fetch, '', open).events('t1')!
    const seen: Array<TaskStatus | TaskProgress | 'error'> = []
    events.onStatus((s) => seen.push(s))
    events.onProgress((p) => seen.push(p))
    events.onError(() => seen.push('error'))
    const source = FakeEventSource.opened[0]!
    const progress: TaskProgress = { task_id: 't1', stage: 'upscaling', progress: 0.5, message: 'Upscaling tile 3/6' }
    source.emit('status', status('t1'))
    source.emit('progress', progress)
    source.emit('status') // no data
    source.emit('error')
    expect(seen).toEqual([status('t1'), progress, 'error'])
    events.close()
    expect(source.closed).toBe(true)
  })
  it('is null where the browser has no EventSource (the page then polls)', () => {
    expect(createApi(vi.fn() as unknown as typeof fetch, '', null).events('t1')).toBeNull()
  })
})
