import { clamp } from './format'

/**
 * The compare slider's new value for a key press (WAI-ARIA slider pattern), or null when the key
 * is not the slider's. Arrows move 1 % (10 % with Shift), Page keys 10 %, Home/End to the ends.
 */
export function sliderValueForKey(value: number, key: string, shift = false): number | null {
  const step = shift ? 10 : 1
  switch (key) {
    case 'ArrowLeft':
    case 'ArrowDown':
      return clamp(value - step, 0, 100)
    case 'ArrowRight':
    case 'ArrowUp':
      return clamp(value + step, 0, 100)
    case 'PageDown':
      return clamp(value - 10, 0, 100)
    case 'PageUp':
      return clamp(value + 10, 0, 100)
    case 'Home':
      return 0
    case 'End':
      return 100
    default:
      return null
  }
}

/** Where a pointer at `clientX` sits across a box, as 0–100 (rounded to a tenth). */
export function sliderValueForPointer(clientX: number, box: { left: number; width: number }): number {
  if (box.width <= 0) return 50
  return Math.round(clamp(((clientX - box.left) / box.width) * 100, 0, 100) * 10) / 10
}
