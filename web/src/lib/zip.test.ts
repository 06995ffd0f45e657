import { unzipSync, strFromU8 } from 'fflate'
import { describe, expect, it } from 'vitest'
import { buildZip, uniqueNames } from './zip'
import { formatBytes, resultFileName } from './format'

describe('uniqueNames', () => {
  it('numbers repeated names, ignoring case', () => {
    expect(uniqueNames(['a_enhanced.png', 'b.png', 'a_enhanced.png', 'A_enhanced.PNG'])).toEqual([
      'a_enhanced.png', 'b.png', 'a_enhanced-2.png', 'A_enhanced-3.PNG',
    ])
  })
  it('does not collide with a name that already looks numbered', () => {
    expect(uniqueNames(['x.jpg', 'x-2.jpg', 'x.jpg'])).toEqual(['x.jpg', 'x-2.jpg', 'x-3.jpg'])
  })
  it('strips folders and unsafe characters', () => {
    expect(uniqueNames(['../../etc/passwd', 'a:b?.png', ''])).toEqual(['passwd', 'a_b_.png', 'image'])
  })
})

describe('buildZip', () => {
  it('holds every result under a unique name, byte for byte', async () => {
    const zip = await buildZip([
      { name: 'cat_enhanced.png', blob: new Blob(['one']) },
      { name: 'cat_enhanced.png', blob: new Blob(['two']) },
    ])
    expect(zip.type).toBe('application/zip')
    const files = unzipSync(new Uint8Array(await zip.arrayBuffer()))
    expect(Object.keys(files).sort()).toEqual(['cat_enhanced-2.png', 'cat_enhanced.png'])
    expect(strFromU8(files['cat_enhanced.png']!)).toBe('one')
    expect(strFromU8(files['cat_enhanced-2.png']!)).toBe('two')
  })
})

describe('resultFileName / formatBytes', () => {
  it("prefers the server's output filename", () => {
    expect(resultFileName('cat.jpg', 'cat_enhanced.png', 'image/png')).toBe('cat_enhanced.png')
    expect(resultFileName('cat.jpg', null, 'image/png')).toBe('cat_enhanced.png')
    expect(resultFileName('cat', undefined, 'image/jpeg')).toBe('cat_enhanced.jpg')
  })
  it('formats sizes people read', () => {
    expect(formatBytes(512)).toBe('512 B')
    expect(formatBytes(1536)).toBe('1.5 KB')
    expect(formatBytes(3 * 1024 * 1024)).toBe('3.0 MB')
  })
})
