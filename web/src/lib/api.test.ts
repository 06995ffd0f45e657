import { describe, expect, expectTypeOf, it, vi } from 'vitest'
import { acceptLanguage, createApi, enhanceForm, limitsFromInfo, newIdempotencyKey, type Answer, type Api } from './api'
import { ApiError } from './http'
import { completed, FakeEventSource, status } from './testing'
import type { Deleted, SubmitResponse, TaskProgress, TaskStatus } from './types'

describe('limitsFromInfo', () => {
  it('reads the limits and whether faces can be restored', () => {
    expect(limitsFromInfo({ limits: { max_upload_mb: 10, max_batch: 5, scales: [2, 4] }, features: { face_restoration: false } }))
      .toEqual({
        max_upload_mb: 10, max_batch: 5, scales: [2, 4], face_restoration: false, face_strength: 0.7, quality_models: {},
        default_quality: 'high',
      })
  })
  it('reads the default quality level: fast where the service has no GPU; a level the page does not offer is not used', () => {
    expect(limitsFromInfo({ default_quality: 'fast', default_quality_reason: 'CPUs only' }).default_quality).toBe('fast')
    expect(limitsFromInfo({ default_quality: 'high' }).default_quality).toBe('high')
    expect(limitsFromInfo({ default_quality: 'medium' }).default_quality).toBe('high')
    expect(limitsFromInfo({ default_quality: 7 }).default_quality).toBe('high')
  })
  it('reads which model each quality level runs, and the default face strength', () => {
    const body = {
      features: { face_restoration: true, face_strength: 0.6 },
      quality_models: {
        fast: { model: 'realesr-animevideov3', fallback: true },
        medium: { model: 'RealESRGAN_x2plus', fallback: false },
        high: { model: 'RealESRGAN_x4plus' },
        ultra: { model: 'unknown level' },
      },
    }
    const limits = limitsFromInfo(body)
    expect(limits.face_strength).toBe(0.6)
    expect(limits.quality_models).toEqual({
      fast: { model: 'realesr-animevideov3', fallback: true },
      medium: { model: 'RealESRGAN_x2plus', fallback: false },
      high: { model: 'RealESRGAN_x4plus', fallback: false },
    })
    const odd = limitsFromInfo({ features: { face_strength: 3 }, quality_models: { fast: { model: 7 }, high: 'x' } })
    expect([odd.face_strength, odd.quality_models]).toEqual([0.7, {}])
  })
  it('keeps the defaults for anything missing', () => {
    expect(limitsFromInfo({})).toEqual({
      max_upload_mb: 50, max_batch: 20, scales: [2, 4], face_restoration: true, face_strength: 0.7, quality_models: {},
      default_quality: 'high',
    })
  })
  it('keeps them for anything odd', () => {
    const defaults = {
      max_upload_mb: 50, max_batch: 20, scales: [2, 4], face_restoration: true, face_strength: 0.7, quality_models: {},
      default_quality: 'high',
    }
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
  it('sends the face strength when faces are restored', () => {
    const photo = new File(['x'], 'a.jpg', { type: 'image/jpeg' })
    const on = enhanceForm(photo, { scale: 4, faceEnhance: true, quality: 'high', faceStrength: 0.35 })
    expect(on.get('face_strength')).toBe('0.35')
    expect(enhanceForm(photo, { scale: 4, faceEnhance: true, quality: 'high', faceStrength: 4 }).get('face_strength')).toBe('1')
    expect(enhanceForm(photo, { scale: 4, faceEnhance: false, quality: 'high', faceStrength: 0.35 }).get('face_strength')).toBeNull()
    expect(enhanceForm(photo, { scale: 4, faceEnhance: true, quality: 'high' }).get('face_strength')).toBeNull() // the server's default
  })
  it('sends the output format, and the quality where the format has one', () => {
    const photo = new File(['x'], 'a.heic', { type: 'image/heic' })
    const webp = enhanceForm(photo, { scale: 4, faceEnhance: false, quality: 'high', outputFormat: 'webp', outputQuality: 80 })
    expect([webp.get('output_format'), webp.get('output_quality')]).toEqual(['webp', '80'])
    const png = enhanceForm(photo, { scale: 4, faceEnhance: false, quality: 'high', outputFormat: 'png', outputQuality: 80 })
    expect([png.get('output_format'), png.get('output_quality')]).toEqual(['png', null]) // lossless: no quality
    const odd = enhanceForm(photo, { scale: 4, faceEnhance: false, quality: 'high', outputFormat: 'avif', outputQuality: 250.4 })
    expect(odd.get('output_quality')).toBe('100')
    const unset = enhanceForm(photo, { scale: 2, faceEnhance: false, quality: 'fast' })
    expect([unset.get('output_format'), unset.get('output_quality')]).toEqual([null, null]) // the server's defaults
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
    expect(init.headers).toEqual({ 'Idempotency-Key': key, 'Accept-Language': 'zh-CN,zh;q=0.9' })
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
    expectTypeOf<Answer<'/api/v1/tasks/{task_id}', 'delete'>>().toEqualTypeOf<Deleted>()
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
    expect(FakeEventSource.opened.map((s) => s.url)).toEqual(['https://example.test/api/v1/events/a%2Fb?lang=zh'])
  })
  it('hands on typed status and progress, skips what is not JSON, and closes', () => {
    FakeEventSource.opened = []
    const events = createApi(vi.fn() as unknown as typeof fetch, '', open).events('t1')!
    const seen: Array<TaskStatus | TaskProgress | 'error'> = []
    events.onStatus((s) => seen.push(s))
    events.onProgress((p) => seen.push(p))
    events.onError(() => seen.push('error'))
    const source = FakeEventSource.opened[0]!
    const progress: TaskProgress = { task_id: 't1', stage: 'upscaling', progress: 0.5, message: 'Upscaling tile 3/6', eta_seconds: 12 }
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

describe("the server's sentences come in the page's language", () => {
  const headersOf = (fetchMock: ReturnType<typeof vi.fn>, call = 0) =>
    new Headers((fetchMock.mock.calls[call] as unknown as [string, RequestInit])[1].headers)

  it('asks for Chinese while the page is in Chinese, English once it is switched, on every call', async () => {
    const fetchMock = vi.fn(async () => new Response(JSON.stringify(status('t1'))))
    let page: 'zh' | 'en' = 'zh'
    const api = createApi(fetchMock as unknown as typeof fetch, '', null, () => page)
    await api.status('t1')
    await api.cancel('t1')
    page = 'en' // the language switch: the next call already asks for English
    await api.status('t1')
    await api.download('t1')
    expect([0, 1, 2, 3].map((i) => headersOf(fetchMock, i).get('Accept-Language')))
      .toEqual(['zh-CN,zh;q=0.9', 'zh-CN,zh;q=0.9', 'en', 'en'])
    expect(acceptLanguage('zh')).toMatch(/^zh-CN/)
  })
  it('keeps the other headers it sends', async () => {
    const fetchMock = vi.fn(async () => new Response(JSON.stringify({ task_id: 't', status: 'queued' })))
    await createApi(fetchMock as unknown as typeof fetch, '', null, () => 'en')
      .submit(new File(['x'], 'a.png'), { scale: 4, faceEnhance: false, quality: 'high' }, undefined, 'k1')
    expect(headersOf(fetchMock).get('Idempotency-Key')).toBe('k1')
    expect(headersOf(fetchMock).get('Accept-Language')).toBe('en')
  })
  it("shows the server's own sentence, in the language it was asked for", async () => {
    const fetchMock = vi.fn(async (_url: string, init: RequestInit) => {
      const zh = new Headers(init.headers).get('Accept-Language')?.startsWith('zh')
      return new Response(JSON.stringify({ error: zh ? '找不到这个任务。' : 'Task not found.' }), { status: 404 })
    })
    let page: 'zh' | 'en' = 'zh'
    const api = createApi(fetchMock as unknown as typeof fetch, '', null, () => page)
    await expect(api.status('t1')).rejects.toMatchObject({ status: 404, message: '找不到这个任务。' })
    page = 'en'
    await expect(api.status('t1')).rejects.toMatchObject({ status: 404, message: 'Task not found.' })
  })
  it('names the language in the event stream URL, which cannot carry headers', () => {
    FakeEventSource.opened = []
    createApi(vi.fn() as unknown as typeof fetch, '', (url) => new FakeEventSource(url), () => 'en').events('t1')
    expect(FakeEventSource.opened[0]!.url).toBe('/api/v1/events/t1?lang=en')
  })
})

describe('deleting a task', () => {
  it('sends DELETE for the task, its id escaped, and reads the answer', async () => {
    const fetchMock = vi.fn(async () => new Response(JSON.stringify({ success: true, task_id: 'a/b', deleted: true })))
    const api = createApi(fetchMock as unknown as typeof fetch)
    await expect(api.delete('a/b')).resolves.toEqual({ success: true, task_id: 'a/b', deleted: true })
    expect(fetchMock).toHaveBeenCalledWith('/api/v1/tasks/a%2Fb', expect.objectContaining({ method: 'DELETE' }))
  })
  it("turns a refusal into an error with the server's sentence", async () => {
    const fetchMock = vi.fn(async () =>
      new Response(JSON.stringify({ error: '这张照片正在处理中，请等处理完成后再删除。' }), { status: 409 }))
    const err = await createApi(fetchMock as unknown as typeof fetch).delete('t1').catch((e) => e)
    expect(err).toBeInstanceOf(ApiError)
    expect(err).toMatchObject({ status: 409, message: '这张照片正在处理中，请等处理完成后再删除。' })
  })
})
