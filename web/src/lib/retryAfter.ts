/**
 * Seconds to wait from a `Retry-After` header: either delta-seconds or an HTTP date.
 * Returns null when the header is missing or unreadable, so the caller can choose its own back-off.
 */
export function parseRetryAfter(header: string | null | undefined, nowMs: number = Date.now()): number | null {
  if (header == null) return null
  const text = header.trim()
  if (text === '') return null
  if (/^\d+(\.\d+)?$/.test(text)) return Math.ceil(Number(text))
  // An HTTP date always names a day or month; this keeps "-5" from parsing as the year -5.
  if (!/[a-z]/i.test(text)) return null
  const when = Date.parse(text)
  if (Number.isNaN(when)) return null
  return Math.max(0, Math.ceil((when - nowMs) / 1000))
}
