import { parseRetryAfter } from './retryAfter'

/** An HTTP error carrying the server's own message (`{"error": "..."}`) and its Retry-After. */
export class ApiError extends Error {
  readonly status: number
  /** Seconds from the Retry-After header, or null when there was none. */
  readonly retryAfter: number | null

  constructor(status: number, message: string, retryAfter: number | null = null) {
    super(message)
    this.name = 'ApiError'
    this.status = status
    this.retryAfter = retryAfter
  }

  /** 429 (busy / rate limited), 503 (no enhancer, storage down) and a 409 that says when to come back
   * (the same upload still being accepted) are worth trying again. */
  get retryable(): boolean {
    return this.status === 429 || this.status === 503 || (this.status === 409 && this.retryAfter != null)
  }
}

/** A request that never got an answer (offline, connection reset): also worth trying again. */
export class NetworkError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'NetworkError'
  }
}

/** Builds an ApiError from a failed response, preferring the server's human message. */
export async function errorFromResponse(res: Response): Promise<ApiError> {
  let message = ''
  try {
    const text = await res.text()
    try {
      const body: unknown = JSON.parse(text)
      if (body && typeof body === 'object') {
        const b = body as { error?: unknown; detail?: unknown; message?: unknown }
        if (typeof b.error === 'string') message = b.error
        else if (typeof b.detail === 'string') message = b.detail
        else if (typeof b.message === 'string') message = b.message
      }
    } catch {
      // Not JSON (a proxy's HTML page, say): a short plain text body is still better than nothing.
      if (text.length > 0 && text.length < 200 && !text.trimStart().startsWith('<')) message = text.trim()
    }
  } catch {
    /* body unreadable */
  }
  if (!message) message = `HTTP ${res.status}${res.statusText ? ' ' + res.statusText : ''}`
  return new ApiError(res.status, message, parseRetryAfter(res.headers.get('Retry-After')))
}
