/**
 * The formats the page offers (the server also takes BMP and TIFF, but browsers cannot show those). HEIC, the
 * iPhone's format, is offered although only Safari shows its preview: the result comes back as JPEG (or the
 * format chosen), which every browser shows.
 */
export const ACCEPTED_TYPES: Readonly<Record<string, readonly string[]>> = {
  'image/jpeg': ['jpg', 'jpeg', 'jfif'],
  'image/png': ['png'],
  'image/webp': ['webp'],
  'image/avif': ['avif'],
  'image/heic': ['heic'],
  'image/heif': ['heif', 'hif'],
}

/** For the file picker's `accept` attribute: MIME types and extensions (some systems only know one). */
export const ACCEPT_ATTRIBUTE = [
  ...Object.keys(ACCEPTED_TYPES),
  ...Object.values(ACCEPTED_TYPES).flat().map((e) => '.' + e),
].join(',')

export type Rejection =
  | { reason: 'type'; name: string }
  | { reason: 'size'; name: string; size: number; maxMb: number }
  | { reason: 'empty'; name: string }

export function extensionOf(name: string): string {
  const dot = name.lastIndexOf('.')
  return dot > 0 ? name.slice(dot + 1).toLowerCase() : ''
}

/** Types a browser reports when it does not know (AVIF on older systems is often blank). */
const UNKNOWN_MIME = new Set(['', 'application/octet-stream'])

/**
 * Checks a file before it is uploaded. A known MIME type decides; a blank or generic one falls
 * back to the extension. Returns null when the file is fine.
 */
export function validateFile(file: Pick<File, 'name' | 'type' | 'size'>, maxUploadMb: number): Rejection | null {
  const mime = file.type.toLowerCase()
  const typeOk = UNKNOWN_MIME.has(mime)
    ? Object.values(ACCEPTED_TYPES).some((exts) => exts.includes(extensionOf(file.name)))
    : mime in ACCEPTED_TYPES
  if (!typeOk) return { reason: 'type', name: file.name }
  if (file.size === 0) return { reason: 'empty', name: file.name }
  if (file.size > maxUploadMb * 1024 * 1024) {
    return { reason: 'size', name: file.name, size: file.size, maxMb: maxUploadMb }
  }
  return null
}
