import { describe, expect, it } from 'vitest'
import { canCancel, canRetry, moveTo, statusFromServer, type ItemStatus } from './itemStatus'

describe('item status machine', () => {
  it('walks the happy path', () => {
    const item = { status: 'pending' as ItemStatus }
    for (const s of ['uploading', 'queued', 'processing', 'completed'] as const) {
      expect(moveTo(item, s)).toBe(true)
      expect(item.status).toBe(s)
    }
  })

  it('ignores stale events: a cancelled or completed card does not come back to life', () => {
    const cancelled = { status: 'cancelled' as ItemStatus }
    expect(moveTo(cancelled, 'processing')).toBe(false)
    expect(cancelled.status).toBe('cancelled')
    const done = { status: 'completed' as ItemStatus }
    expect(moveTo(done, 'failed')).toBe(false)
    expect(done.status).toBe('completed')
  })

  it('only a retry leaves failed or cancelled, and it goes back to pending', () => {
    const failed = { status: 'failed' as ItemStatus }
    expect(moveTo(failed, 'uploading')).toBe(false)
    expect(moveTo(failed, 'pending')).toBe(true)
    expect(canRetry('failed')).toBe(true)
    expect(canRetry('completed')).toBe(false)
  })

  it('maps server statuses, treating failed+cancelled as cancelled and completed as not yet downloaded', () => {
    expect(statusFromServer({ status: 'failed', stage: 'cancelled' })).toBe('cancelled')
    expect(statusFromServer({ status: 'failed', stage: 'failed' })).toBe('failed')
    expect(statusFromServer({ status: 'queued', stage: 'queued' })).toBe('queued')
    expect(statusFromServer({ status: 'completed', stage: 'completed' })).toBe('processing')
  })

  it('offers cancel only before a GPU has the image', () => {
    expect(canCancel('queued')).toBe(true)
    expect(canCancel('pending')).toBe(true)
    expect(canCancel('processing')).toBe(false)
    expect(canCancel('completed')).toBe(false)
  })
})
