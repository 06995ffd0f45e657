const EXT_BY_TYPE: Record<string, string> = {
  'image/jpeg': 'jpg',
  'image/png': 'png',
  'image/webp': 'webp',
  'image/avif': 'avif',
}

/**
 * The name a result is saved under: the server's `output.filename` (already `<name>_enhanced.<ext>`),
 * or, when it is missing, the same pattern built from the original name and the result's type.
 */
export function resultFileName(originalName: string, serverName: string | null | undefined, contentType: string): string {
  if (serverName && serverName.trim()) return serverName.trim()
  const dot = originalName.lastIndexOf('.')
  const stem = dot > 0 ? originalName.slice(0, dot) : originalName || 'image'
  const ext = EXT_BY_TYPE[contentType.split(';')[0]!.trim().toLowerCase()] ?? (dot > 0 ? originalName.slice(dot + 1) : 'png')
  return `${stem}_enhanced.${ext}`
}

/** 1536 → "1.5 KB"; decimal places only where they matter. */
export function formatBytes(bytes: number): string {
  if (!(bytes >= 0)) return ''
  const units = ['B', 'KB', 'MB', 'GB']
  let value = bytes
  let unit = 0
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024
    unit++
  }
  const digits = unit === 0 || value >= 100 ? 0 : 1
  return `${value.toFixed(digits)} ${units[unit]}`
}

export function clamp(value: number, min: number, max: number): number {
  return Math.min(max, Math.max(min, value))
}

/**
 * How an estimate of seconds left is said: whole seconds under a minute, else whole minutes; null when there
 * is none (the server could not tell yet, or it is not a number).
 */
export function etaWords(seconds: number | null | undefined): { key: 'etaSeconds' | 'etaMinutes'; n: number } | null {
  if (typeof seconds !== 'number' || !Number.isFinite(seconds) || seconds < 0) return null
  if (seconds < 60) return { key: 'etaSeconds', n: Math.max(1, Math.round(seconds)) }
  return { key: 'etaMinutes', n: Math.round(seconds / 60) }
}
