import { describe, expect, it } from 'vitest'
import { en, format, zh } from './messages'

describe('dictionaries', () => {
  it('has every Chinese key in English, none empty', () => {
    expect(Object.keys(en).sort()).toEqual(Object.keys(zh).sort())
    for (const v of [...Object.values(zh), ...Object.values(en)]) expect(v.trim()).not.toBe('')
  })
  it('keeps the same placeholders in both languages', () => {
    const holes = (s: string) => (s.match(/\{\w+\}/g) ?? []).sort().join()
    for (const k of Object.keys(zh) as Array<keyof typeof zh>) expect(holes(en[k])).toBe(holes(zh[k]))
  })
  it('fills placeholders', () => {
    expect(format(zh.queuePosition, { n: 3, ahead: 2 })).toBe('排队第 3 位，前面还有 2 位')
    expect(format(en.retryIn, { n: 5 })).toBe('Server busy, retrying in 5 s')
  })
})
