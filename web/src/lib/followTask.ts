import type { TaskEvents } from './api'
import { isRetryable } from './retry'
import { ApiError } from './http'
import { AbortedError, sleep as realSleep } from './sleep'
import type { TaskProgress, TaskStatus } from './types'
import { isFinal } from './types'

export interface FollowDeps {
  /** Opens the task's event stream (`Api.events`), or null when there is none: then we poll from the start. */
  events: (taskId: string) => TaskEvents | null
  getStatus: (taskId: string, signal: AbortSignal) => Promise<TaskStatus>
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>
}

export interface FollowHandlers {
  onStatus: (s: TaskStatus) => void
  onProgress: (p: TaskProgress) => void
  /** Told once when the page switches from the stream to polling (for diagnostics / tests). */
  onFallback?: () => void
}

export interface Following {
  /** Resolves with the final status (completed or failed); rejects on an unrecoverable error. */
  done: Promise<TaskStatus>
  /** Stops listening (cancel, remove); `done` then rejects with an AbortError. */
  stop: () => void
}

/** Polling cadence: 1 s, growing by a quarter each time to at most 2 s. */
export function pollDelayMs(polls: number): number {
  return Math.min(2000, Math.round(1000 * 1.25 ** polls))
}

/** After failed polls: 2, 4, 8 s ... at most 15 s, unless the server said how long. */
export function pollErrorDelayMs(failures: number, retryAfter: number | null): number {
  if (retryAfter != null) return retryAfter * 1000
  return Math.min(15_000, 1000 * 2 ** failures)
}

/** How many polls in a row may fail (server busy, offline) before the image is marked failed. */
export const MAX_POLL_FAILURES = 8

/**
 * Follows a task to its end: Server-Sent Events first; polling /status only if the stream
 * errors before a final status or EventSource is missing. The stream is closed as soon as a
 * final status arrives, so EventSource never reconnects to a finished task.
 */
export function followTask(taskId: string, handlers: FollowHandlers, deps: FollowDeps): Following {
  const sleep = deps.sleep ?? realSleep
  const abort = new AbortController()
  let source: TaskEvents | null = null
  let settled = false
  let resolveDone!: (s: TaskStatus) => void
  let rejectDone!: (e: unknown) => void
  const done = new Promise<TaskStatus>((res, rej) => {
    resolveDone = res
    rejectDone = rej
  })

  const finish = (s: TaskStatus) => {
    if (settled) return
    settled = true
    source?.close()
    resolveDone(s)
  }
  const fail = (e: unknown) => {
    if (settled) return
    settled = true
    source?.close()
    rejectDone(e)
  }

  const status = (s: TaskStatus) => {
    if (settled) return
    handlers.onStatus(s)
    if (isFinal(s)) finish(s)
  }

  const poll = async () => {
    let polls = 0
    let failures = 0
    while (!settled) {
      try {
        const s = await deps.getStatus(taskId, abort.signal)
        failures = 0
        status(s)
        if (settled) return
        await sleep(pollDelayMs(polls++), abort.signal)
      } catch (e) {
        if (settled) return
        if (!isRetryable(e) || ++failures >= MAX_POLL_FAILURES) return fail(e)
        try {
          await sleep(pollErrorDelayMs(failures, e instanceof ApiError ? e.retryAfter : null), abort.signal)
        } catch (aborted) {
          return fail(aborted)
        }
      }
    }
  }

  const fallBack = () => {
    if (settled) return
    source?.close()
    source = null
    handlers.onFallback?.()
    void poll()
  }

  try {
    source = deps.events(taskId)
  } catch {
    source = null
  }
  if (source) {
    source.onStatus((s) => status(s))
    source.onProgress((p) => {
      if (!settled) handlers.onProgress(p)
    })
    // Any error before the final status (server restart, proxy cut, 404) means: poll instead.
    // EventSource would retry by itself, but polling copes with every one of those cases.
    source.onError(() => fallBack())
  } else {
    handlers.onFallback?.()
    void poll()
  }

  return {
    done,
    stop: () => {
      abort.abort()
      fail(new AbortedError())
    },
  }
}
