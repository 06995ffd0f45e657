import type { TaskStatus } from './types'
import { isCancelled } from './types'

/** What one image card can be doing; `data-status` on the card shows it. */
export type ItemStatus = 'pending' | 'uploading' | 'queued' | 'processing' | 'completed' | 'failed' | 'cancelled'

/**
 * The moves an image may make. Anything else is a stale event (a late progress message after a
 * cancel, say) and is ignored, so a cancelled or finished card never flips back by itself.
 * Only retry leaves failed/cancelled, and nothing leaves completed (remove deletes the card).
 */
const ALLOWED: Record<ItemStatus, readonly ItemStatus[]> = {
  pending: ['uploading', 'cancelled'],
  uploading: ['queued', 'processing', 'failed', 'cancelled'],
  queued: ['processing', 'failed', 'cancelled'],
  processing: ['completed', 'failed', 'cancelled'],
  completed: [],
  failed: ['pending'],
  cancelled: ['pending'],
}

export function canMove(from: ItemStatus, to: ItemStatus): boolean {
  return ALLOWED[from].includes(to)
}

/** Moves `item` to `to` if that is a legal move; returns whether it moved. Same status is a no-op true. */
export function moveTo(item: { status: ItemStatus }, to: ItemStatus): boolean {
  if (item.status === to) return true
  if (!canMove(item.status, to)) return false
  item.status = to
  return true
}

/**
 * The card status a server status means. A completed task stays "processing" on the card until
 * its result has been downloaded: a card marked completed always has its image ready.
 */
export function statusFromServer(s: Pick<TaskStatus, 'status' | 'stage'>): ItemStatus {
  if (isCancelled(s)) return 'cancelled'
  switch (s.status) {
    case 'queued':
      return 'queued'
    case 'processing':
    case 'completed':
      return 'processing'
    default:
      return 'failed'
  }
}

export const ACTIVE_STATUSES: readonly ItemStatus[] = ['uploading', 'queued', 'processing']

export function isActive(status: ItemStatus): boolean {
  return ACTIVE_STATUSES.includes(status)
}

/** A user may cancel an image that has not started on a GPU yet. */
export function canCancel(status: ItemStatus): boolean {
  return status === 'pending' || status === 'uploading' || status === 'queued'
}

export function canRetry(status: ItemStatus): boolean {
  return status === 'failed' || status === 'cancelled'
}

/** A user may delete an image from the server once it has a task there, except while a GPU is enhancing it
 * (the server refuses that with 409) or while it is still being uploaded. */
export function canDelete(status: ItemStatus, taskId: string | null): boolean {
  return taskId !== null && status !== 'uploading' && status !== 'processing'
}
