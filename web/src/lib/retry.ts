import { ApiError, NetworkError } from './http'
import { sleep as realSleep } from './sleep'

export interface RetryOptions {
  /** Total attempts, the first included. */
  maxTries?: number
  /** Called with the seconds left before the next try (counting down), then with null when it starts. */
  onWait?: (secondsLeft: number | null, cause: Error) => void
  signal?: AbortSignal
  /** Longest Retry-After we are willing to sit through; beyond it we give up and show the message. */
  maxWaitSeconds?: number
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>
}

export const DEFAULT_MAX_TRIES = 5

/** Back-off used when the server gave no Retry-After (or the network failed): 2, 4, 8, 16, 30 s. */
export function fallbackDelaySeconds(failedAttempts: number): number {
  return Math.min(30, 2 ** failedAttempts)
}

export function isRetryable(e: unknown): e is ApiError | NetworkError {
  return (e instanceof ApiError && e.retryable) || e instanceof NetworkError
}

/**
 * Runs `attempt` until it succeeds, retrying only on 429/503 and network failures. It waits what
 * the server's Retry-After asks (one-second countdown ticks so the page can show it), otherwise
 * backs off. Other errors (400, 413, 415, 422, 404 ...) are thrown at once: retrying cannot help.
 */
export async function withRetry<T>(attempt: () => Promise<T>, opts: RetryOptions = {}): Promise<T> {
  const maxTries = opts.maxTries ?? DEFAULT_MAX_TRIES
  const maxWait = opts.maxWaitSeconds ?? 600
  const sleep = opts.sleep ?? realSleep
  for (let tries = 1; ; tries++) {
    try {
      return await attempt()
    } catch (e) {
      if (!isRetryable(e) || tries >= maxTries) throw e
      const wait = e instanceof ApiError && e.retryAfter != null ? e.retryAfter : fallbackDelaySeconds(tries)
      if (wait > maxWait) throw e
      for (let left = wait; left > 0; left--) {
        opts.onWait?.(left, e)
        await sleep(1000, opts.signal)
      }
      opts.onWait?.(null, e)
    }
  }
}
