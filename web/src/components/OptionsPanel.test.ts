// @vitest-environment happy-dom
import { afterEach, describe, expect, it } from 'vitest'
import { createApp, h, nextTick, ref, type App } from 'vue'
import type { EnhanceOptions } from '../lib/types'
import OptionsPanel from './OptionsPanel.vue'

const START: EnhanceOptions = Object.freeze({ scale: 4, faceEnhance: true, quality: 'high' })
let mounted: App | null = null

afterEach(() => {
  mounted?.unmount()
  mounted = null
  document.body.innerHTML = ''
})

/** The panel under a parent that holds the options and takes every change the panel asks for. */
function mount(start: EnhanceOptions = START, facesAvailable = true) {
  const options = ref(start)
  const changes: EnhanceOptions[] = []
  const host = document.createElement('div')
  document.body.append(host)
  mounted = createApp({
    render: () =>
      h(OptionsPanel, {
        options: options.value,
        scales: [2, 4],
        facesAvailable,
        onChange: (next: EnhanceOptions) => {
          changes.push(next)
          options.value = next
        },
      }),
  })
  mounted.mount(host)
  const input = (testId: string) => host.querySelector<HTMLInputElement>(`[data-testid="${testId}"] input`)!
  return { options, changes, input }
}

describe('OptionsPanel', () => {
  it("shows the parent's options", () => {
    const { input } = mount({ scale: 2, faceEnhance: false, quality: 'fast' })
    expect([input('scale-2').checked, input('scale-4').checked]).toEqual([true, false])
    expect([input('quality-fast').checked, input('quality-high').checked]).toEqual([true, false])
    expect(input('face-toggle').checked).toBe(false)
  })

  it("asks the parent for each change with a new object, never writing into the parent's", async () => {
    const { options, changes, input } = mount() // START is frozen: a write into it would throw
    input('scale-2').click()
    await nextTick()
    input('quality-fast').click()
    await nextTick()
    input('face-toggle').click()
    await nextTick()
    expect(changes).toEqual([
      { scale: 2, faceEnhance: true, quality: 'high' },
      { scale: 2, faceEnhance: true, quality: 'fast' },
      { scale: 2, faceEnhance: false, quality: 'fast' },
    ])
    expect(START).toEqual({ scale: 4, faceEnhance: true, quality: 'high' })
    expect(options.value).toEqual({ scale: 2, faceEnhance: false, quality: 'fast' })
    expect(input('scale-2').checked && input('quality-fast').checked && !input('face-toggle').checked).toBe(true)
  })

  it('follows options the parent changes itself', async () => {
    const { options, input } = mount()
    options.value = { ...options.value, scale: 2 }
    await nextTick()
    expect([input('scale-2').checked, input('scale-4').checked]).toEqual([true, false])
  })

  it('offers no face restoration where the service has none', () => {
    const { input } = mount({ ...START, faceEnhance: false }, false)
    expect(input('face-toggle').disabled).toBe(true)
  })
})
