/** Test doubles shared by the unit tests (not part of the page bundle: only tests import it). */
import { taskEvents, type EventSourceLike, type TaskEvents } from './api'
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

/** A task's event stream over a fresh fake EventSource at the task's URL (what `Api.events` opens). */
export function fakeEvents(taskId: string): TaskEvents {
  return taskEvents(new FakeEventSource(`/api/v1/events/${encodeURIComponent(taskId)}`))
}

/** A whole status body, as the server sends it (every key of the contract), queued unless told otherwise. */
export function status(taskId: string, over: Partial<TaskStatus> = {}): TaskStatus {
  return {
    task_id: taskId,
    status: 'queued',
    stage: 'queued',
    message: 'Waiting in line',
    progress: 0,
    queue_position: 1,
    result_url: null,
    download_url: null,
    error: null,
    created_at: 1_700_000_000,
    updated_at: 1_700_000_000,
    processing_time: null,
    attempts: 0,
    options: {
      scale: 4, quality_level: 'high', tile_size: 400, face_enhance: null, face_strength: 0.7,
      output_format: 'auto', output_quality: 92,
    },
    input: { filename: `${taskId}.png`, width: 200, height: 150, size: 3 },
    output: null,
    output_scale: 4,
    notice: null,
    eta_seconds: null,
    ...over,
  }
}

export function completed(taskId: string, filename = `${taskId}_enhanced.png`): TaskStatus {
  return status(taskId, {
    status: 'completed', stage: 'completed', message: 'Enhancement completed', progress: 1, queue_position: null,
    result_url: `/api/v1/download/${taskId}`, download_url: `/api/v1/download/${taskId}`,
    output: { filename, content_type: 'image/png', width: 800, height: 600, size: 3, engine: 'x', faces: 0 },
  })
}

export const flush = () => new Promise((r) => setTimeout(r, 0))
