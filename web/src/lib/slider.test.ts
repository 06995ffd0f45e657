import { describe, expect, it } from 'vitest'
import { sliderValueForKey, sliderValueForPointer } from './slider'

describe('compare slider', () => {
  it('moves with arrows, faster with Shift, and jumps with Home/End, staying in 0–100', () => {
    expect(sliderValueForKey(50, 'ArrowRight')).toBe(51)
    expect(sliderValueForKey(50, 'ArrowLeft', true)).toBe(40)
    expect(sliderValueForKey(99.5, 'ArrowUp')).toBe(100)
    expect(sliderValueForKey(3, 'PageDown')).toBe(0)
    expect(sliderValueForKey(42, 'Home')).toBe(0)
    expect(sliderValueForKey(42, 'End')).toBe(100)
    expect(sliderValueForKey(42, 'a')).toBeNull()
  })
  it('follows the pointer across the image', () => {
    expect(sliderValueForPointer(150, { left: 100, width: 200 })).toBe(25)
    expect(sliderValueForPointer(0, { left: 100, width: 200 })).toBe(0)
    expect(sliderValueForPointer(999, { left: 100, width: 200 })).toBe(100)
  })
})
