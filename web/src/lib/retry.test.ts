import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { ApiError, errorFromResponse, NetworkError } from './http'
import { withRetry } from './retry'
import { parseRetryAfter } from './retryAfter'

describe('parseRetryAfter', () => {
  it('reads delta-seconds, rounding up', () => {
    expect(parseRetryAfter('7')).toBe(7)
    expect(parseRetryAfter(' 1.2 ')).toBe(2)
    expect(parseRetryAfter('0')).toBe(0)
  })
  it('reads an HTTP date relative to now', () => {
    const now = Date.parse('2025-01-01T00:00:00Z')
    expect(parseRetryAfter('Wed, 01 Jan 2025 00:00:30 GMT', now)).toBe(30)
    expect(parseRetryAfter('Tue, 31 Dec 2024 23:00:00 GMT', now)).toBe(0)
  })
  it('gives null for missing or unreadable headers', () => {
    expect(parseRetryAfter(null)).toBeNull()
    expect(parseRetryAfter('')).toBeNull()
    expect(parseRetryAfter('soon')).toBeNull()
    expect(parseRetryAfter('-5')).toBeNull()
  })
})

describe('errorFromResponse', () => {
  it("uses the server's own message and Retry-After", async () => {
    const res = new Response(JSON.stringify({ error: '服务器繁忙，请稍后再试' }), {
      status: 429,
      headers: { 'Retry-After': '12', 'Content-Type': 'application/json' },
    })
    const e = await errorFromResponse(res)
    expect(e.message).toBe('服务器繁忙，请稍后再试')
    expect(e.status).toBe(429)
    expect(e.retryAfter).toBe(12)
    expect(e.retryable).toBe(true)
  })
  it('falls back to the status line when the body is not the JSON shape', async () => {
    const e = await errorFromResponse(new Response('<html>bad gateway</html>', { status: 502, statusText: 'Bad Gateway' }))
    expect(e.message).toBe('HTTP 502 Bad Gateway')
    expect(e.retryable).toBe(false)
  })
})

describe('withRetry', () => {
  beforeEach(() => vi.useFakeTimers())
  afterEach(() => vi.useRealTimers())

  it('waits the Retry-After seconds, counting down, then tries again', async () => {
    const attempt = vi
      .fn<() => Promise<string>>()
      .mockRejectedValueOnce(new ApiError(429, 'busy', 3))
      .mockResolvedValueOnce('ok')
    const ticks: Array<number | null> = []
    const result = withRetry(attempt, { onWait: (s) => ticks.push(s) })

    await vi.advanceTimersByTimeAsync(2999)
    expect(attempt).toHaveBeenCalledTimes(1) // not before the server said
    expect(ticks).toEqual([3, 2, 1])
    await vi.advanceTimersByTimeAsync(1)
    await expect(result).resolves.toBe('ok')
    expect(attempt).toHaveBeenCalledTimes(2)
    expect(ticks).toEqual([3, 2, 1, null])
  })

  it('retries 503 and network failures but gives up after maxTries with the last message', async () => {
    const attempt = vi
      .fn<() => Promise<string>>()
      .mockRejectedValueOnce(new NetworkError('offline'))
      .mockRejectedValue(new ApiError(503, 'No enhancer is available', 1))
    const result = withRetry(attempt, { maxTries: 3 })
    const check = expect(result).rejects.toThrow('No enhancer is available')
    await vi.advanceTimersByTimeAsync(10_000)
    await check
    expect(attempt).toHaveBeenCalledTimes(3)
  })

  it('does not retry errors that retrying cannot fix', async () => {
    const attempt = vi.fn<() => Promise<string>>().mockRejectedValue(new ApiError(415, 'Unsupported image format'))
    await expect(withRetry(attempt)).rejects.toThrow('Unsupported image format')
    expect(attempt).toHaveBeenCalledTimes(1)
  })

  it('stops waiting when aborted', async () => {
    const abort = new AbortController()
    const attempt = vi.fn<() => Promise<string>>().mockRejectedValue(new ApiError(429, 'busy', 30))
    const result = withRetry(attempt, { signal: abort.signal })
    const check = expect(result).rejects.toMatchObject({ name: 'AbortError' })
    await vi.advanceTimersByTimeAsync(1000)
    abort.abort()
    await check
    await vi.advanceTimersByTimeAsync(60_000)
    expect(attempt).toHaveBeenCalledTimes(1)
  })
})
