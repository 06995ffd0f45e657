/** Test doubles shared by the unit tests (not part of the page bundle: only tests import it). */
import type { EventSourceLike } from './followTask'
import type { TaskStatus } from './types'

export class FakeEventSource implements EventSourceLike {
  static opened: FakeEventSource[] = []
  closed = false
  private listeners = new Map<string, Array<(ev: MessageEvent) => void>>()

  constructor(readonly url: string) {
    FakeEventSource.opened.push(this)
  }

  addEventListener(type: string, listener: (ev: MessageEvent) => void): void {
    this.listeners.set(type, [...(this.listeners.get(type) ?? []), listener])
  }

  close(): void {
    this.closed = true
  }

  /** Delivers an event as the server would; nothing arrives once closed, like a real EventSource. */
  emit(type: string, data?: unknown): void {
    if (this.closed) return
    const ev = { data: data === undefined ? undefined : JSON.stringify(data) } as MessageEvent
    for (const l of this.listeners.get(type) ?? []) l(ev)
  }
}

export function status(taskId: string, over: Partial<TaskStatus> = {}): TaskStatus {
  return {
    task_id: taskId,
    status: 'queued',
    stage: 'queued',
    message: 'Waiting in line',
    progress: 0,
    error: null,
    queue_position: 1,
    output: null,
    ...over,
  }
}

export function completed(taskId: string, filename = `${taskId}_enhanced.png`): TaskStatus {
  return status(taskId, {
    status: 'completed', stage: 'completed', message: 'Enhancement completed', progress: 1, queue_position: null,
    output: { filename, content_type: 'image/png', width: 800, height: 600, size: 3, engine: 'x', faces: 0 },
  })
}

export const flush = () => new Promise((r) => setTimeout(r, 0))
