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
      const said = ['error', 'detail', 'message'].map((key) => field(body, key)).find((v) => typeof v === 'string')
      if (typeof said === 'string') message = said
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

/** `body[key]` when `body` is an object, else undefined: reads JSON of unknown shape without trusting it. */
export function field(body: unknown, key: string): unknown {
  return typeof body === 'object' && body !== null ? Reflect.get(body, key) : undefined
}
