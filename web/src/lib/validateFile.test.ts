import { describe, expect, it } from 'vitest'
import { ACCEPT_ATTRIBUTE, validateFile } from './validateFile'

const MB = 1024 * 1024
const file = (name: string, type: string, size = 1000) => ({ name, type, size })

describe('validateFile', () => {
  it('accepts JPEG, PNG, WebP and AVIF', () => {
    for (const [n, t] of [['a.jpg', 'image/jpeg'], ['b.png', 'image/png'], ['c.webp', 'image/webp'], ['d.avif', 'image/avif']]) {
      expect(validateFile(file(n!, t!), 50)).toBeNull()
    }
  })
  it("accepts an iPhone's HEIC, by type or by extension", () => {
    expect(validateFile(file('IMG_0001.HEIC', 'image/heic'), 50)).toBeNull()
    expect(validateFile(file('IMG_0002.heif', 'image/heif'), 50)).toBeNull()
    expect(validateFile(file('IMG_0003.HEIC', ''), 50)).toBeNull()
    expect(ACCEPT_ATTRIBUTE).toContain('.heic')
  })
  it('falls back to the extension when the browser reports no type (AVIF often)', () => {
    expect(validateFile(file('photo.AVIF', ''), 50)).toBeNull()
    expect(validateFile(file('notes.txt', ''), 50)).toEqual({ reason: 'type', name: 'notes.txt' })
  })
  it('trusts a known type over a misleading extension', () => {
    expect(validateFile(file('anim.jpg', 'image/gif'), 50)).toMatchObject({ reason: 'type' })
    expect(validateFile(file('doc.pdf', 'application/pdf'), 50)).toMatchObject({ reason: 'type' })
  })
  it('refuses files over the server limit and empty files', () => {
    expect(validateFile(file('big.jpg', 'image/jpeg', 50 * MB), 50)).toBeNull()
    expect(validateFile(file('big.jpg', 'image/jpeg', 50 * MB + 1), 50)).toEqual({
      reason: 'size', name: 'big.jpg', size: 50 * MB + 1, maxMb: 50,
    })
    expect(validateFile(file('zero.png', 'image/png', 0), 50)).toMatchObject({ reason: 'empty' })
  })
  it('tells the file picker the same formats', () => {
    expect(ACCEPT_ATTRIBUTE).toContain('image/avif')
    expect(ACCEPT_ATTRIBUTE).toContain('.webp')
    expect(ACCEPT_ATTRIBUTE).not.toContain('gif')
  })
})
