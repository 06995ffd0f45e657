import { zipSync } from 'fflate'

/** Strips folders and characters that file systems refuse, keeping the name readable. */
export function safeFileName(name: string): string {
  const base = name.split(/[\\/]/).pop() ?? ''
  // eslint-disable-next-line no-control-regex
  const cleaned = base.replace(/[\u0000-\u001f<>:"|?*]/g, '_').trim()
  return cleaned === '' || cleaned === '.' || cleaned === '..' ? 'image' : cleaned
}

/**
 * Makes every name unique, case-insensitively (Windows and macOS would overwrite "A.png" with
 * "a.png" on extraction): the second "photo.png" becomes "photo-2.png", the third "photo-3.png".
 */
export function uniqueNames(names: readonly string[]): string[] {
  const taken = new Set<string>()
  return names.map((raw) => {
    const name = safeFileName(raw)
    const dot = name.lastIndexOf('.')
    const stem = dot > 0 ? name.slice(0, dot) : name
    const ext = dot > 0 ? name.slice(dot) : ''
    let candidate = name
    for (let n = 2; taken.has(candidate.toLowerCase()); n++) candidate = `${stem}-${n}${ext}`
    taken.add(candidate.toLowerCase())
    return candidate
  })
}

export interface ZipEntry {
  name: string
  blob: Blob
}

/**
 * A ZIP of results the page already holds (never fetched again). Images are already compressed,
 * so entries are stored (level 0): fast, and no bigger than deflating them would be.
 */
export async function buildZip(entries: readonly ZipEntry[]): Promise<Blob> {
  const names = uniqueNames(entries.map((e) => e.name))
  const files: Record<string, [Uint8Array, { level: 0 }]> = {}
  for (let i = 0; i < entries.length; i++) {
    const bytes = new Uint8Array(await entries[i]!.blob.arrayBuffer())
    files[names[i]!] = [bytes, { level: 0 }]
  }
  const zipped = zipSync(files)
  return new Blob([zipped as Uint8Array<ArrayBuffer>], { type: 'application/zip' })
}
