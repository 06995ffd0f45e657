import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { followTask, pollDelayMs } from './followTask'
import { ApiError } from './http'
import type { TaskStatus } from './types'
import { completed, FakeEventSource, fakeEvents, status } from './testing'

const events = fakeEvents
const noEvents = () => null

beforeEach(() => {
  FakeEventSource.opened = []
})

describe('followTask with Server-Sent Events', () => {
  it('reports status and progress from the stream and closes it at the final status', async () => {
    const getStatus = vi.fn()
    const seen: string[] = []
    const f = followTask('t1', {
      onStatus: (s) => seen.push(`status:${s.status}`),
      onProgress: (p) => seen.push(`progress:${p.message}`),
    }, { events, getStatus })
    const es = FakeEventSource.opened[0]!
    expect(es.url).toBe('/api/v1/events/t1')
    es.emit('status', status('t1'))
    es.emit('progress', { task_id: 't1', stage: 'upscaling', progress: 0.5, message: 'Upscaling tile 3/6' })
    es.emit('status', completed('t1'))
    await expect(f.done).resolves.toMatchObject({ status: 'completed' })
    expect(seen).toEqual(['status:queued', 'progress:Upscaling tile 3/6', 'status:completed'])
    expect(es.closed).toBe(true) // so EventSource cannot reconnect to a finished task
    es.emit('error')
    expect(getStatus).not.toHaveBeenCalled()
  })
})

describe('falling back to polling', () => {
  beforeEach(() => vi.useFakeTimers())
  afterEach(() => vi.useRealTimers())

  it('polls /status when the stream errors before the end', async () => {
    const answers: TaskStatus[] = [status('t1', { status: 'processing', queue_position: null }), completed('t1')]
    const getStatus = vi.fn(async () => answers.shift()!)
    const onFallback = vi.fn()
    const onStatus = vi.fn()
    const f = followTask('t1', { onStatus, onProgress: () => {}, onFallback }, { events, getStatus })
    const es = FakeEventSource.opened[0]!
    es.emit('status', status('t1'))
    es.emit('error')
    expect(es.closed).toBe(true)
    expect(onFallback).toHaveBeenCalledTimes(1)
    await vi.advanceTimersByTimeAsync(1000)
    await expect(f.done).resolves.toMatchObject({ status: 'completed' })
    expect(getStatus).toHaveBeenCalledTimes(2)
    expect(onStatus.mock.calls.map((c) => c[0].status)).toEqual(['queued', 'processing', 'completed'])
  })

  it('polls from the start when there is no EventSource, every 1 s growing to 2 s', async () => {
    let calls = 0
    const getStatus = vi.fn(async () => (++calls >= 6 ? completed('t1') : status('t1')))
    const f = followTask('t1', { onStatus: () => {}, onProgress: () => {} }, { events: noEvents, getStatus })
    await vi.advanceTimersByTimeAsync(0)
    expect(getStatus).toHaveBeenCalledTimes(1)
    await vi.advanceTimersByTimeAsync(999)
    expect(getStatus).toHaveBeenCalledTimes(1)
    await vi.advanceTimersByTimeAsync(1)
    expect(getStatus).toHaveBeenCalledTimes(2)
    await vi.advanceTimersByTimeAsync(10_000)
    await expect(f.done).resolves.toMatchObject({ status: 'completed' })
    expect(getStatus).toHaveBeenCalledTimes(6)
    expect([0, 1, 2, 3, 4, 10].map(pollDelayMs)).toEqual([1000, 1250, 1563, 1953, 2000, 2000])
  })

  it("fails with the server's message when polling gets a refusal such as 404", async () => {
    const getStatus = vi.fn(async () => {
      throw new ApiError(404, 'Task not found')
    })
    const f = followTask('t1', { onStatus: () => {}, onProgress: () => {} }, { events, getStatus })
    FakeEventSource.opened[0]!.emit('error')
    await expect(f.done).rejects.toThrow('Task not found')
  })

  it('rides out a busy server while polling (503 with Retry-After)', async () => {
    const getStatus = vi
      .fn<() => Promise<TaskStatus>>()
      .mockRejectedValueOnce(new ApiError(503, 'storage down', 5))
      .mockResolvedValueOnce(completed('t1'))
    const f = followTask('t1', { onStatus: () => {}, onProgress: () => {} }, { events: noEvents, getStatus })
    await vi.advanceTimersByTimeAsync(4999)
    expect(getStatus).toHaveBeenCalledTimes(1)
    await vi.advanceTimersByTimeAsync(1)
    await expect(f.done).resolves.toMatchObject({ status: 'completed' })
  })

  it('stop() closes the stream and ends polling', async () => {
    const getStatus = vi.fn(async () => status('t1'))
    const f = followTask('t1', { onStatus: () => {}, onProgress: () => {} }, { events: noEvents, getStatus })
    await vi.advanceTimersByTimeAsync(0)
    f.stop()
    await expect(f.done).rejects.toMatchObject({ name: 'AbortError' })
    await vi.advanceTimersByTimeAsync(10_000)
    expect(getStatus).toHaveBeenCalledTimes(1)
  })
})
