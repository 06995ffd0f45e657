import { describe, expect, it, vi } from 'vitest'
import { createApi, enhanceForm, limitsFromInfo, newIdempotencyKey } from './api'
import { ApiError } from './http'

describe('limitsFromInfo', () => {
  it('reads the limits and whether faces can be restored', () => {
    expect(limitsFromInfo({ limits: { max_upload_mb: 10, max_batch: 5, scales: [2, 4] }, features: { face_restoration: false } }))
      .toEqual({ max_upload_mb: 10, max_batch: 5, scales: [2, 4], face_restoration: false })
  })
  it('keeps the defaults for anything missing', () => {
    expect(limitsFromInfo({})).toEqual({ max_upload_mb: 50, max_batch: 20, scales: [2, 4], face_restoration: true })
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
