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
function mount(start: EnhanceOptions = START, facesAvailable = true, qualityModels: object = {},
  defaultQuality: EnhanceOptions['quality'] = 'high') {
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
        qualityModels,
        defaultQuality,
        onChange: (next: EnhanceOptions) => {
          changes.push(next)
          options.value = next
        },
      }),
  })
  mounted.mount(host)
  const input = (testId: string) => host.querySelector<HTMLInputElement>(`[data-testid="${testId}"] input`)!
  const text = (testId: string) => host.querySelector(`[data-testid="${testId}"]`)?.textContent?.trim() ?? null
  const slider = () => host.querySelector<HTMLInputElement>('[data-testid="face-strength"] input')
  return { options, changes, input, text, slider }
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

  it('offers the output formats, and a quality only where the format has one', async () => {
    const { changes, options } = mount({ ...START, outputFormat: 'auto', outputQuality: 92 })
    const select = document.querySelector<HTMLSelectElement>('[data-testid="output-format"] select')!
    const quality = () => document.querySelector<HTMLInputElement>('[data-testid="output-quality"] input')
    expect(Array.from(select.options, (o) => o.value)).toEqual(['auto', 'jpeg', 'png', 'webp', 'avif'])
    expect(select.value).toBe('auto')
    expect(quality()?.value).toBe('92')
    select.value = 'webp'
    select.dispatchEvent(new Event('change'))
    await nextTick()
    quality()!.value = '70'
    quality()!.dispatchEvent(new Event('change'))
    await nextTick()
    expect(changes.slice(-2)).toEqual([
      { ...START, outputFormat: 'webp', outputQuality: 92 },
      { ...START, outputFormat: 'webp', outputQuality: 70 },
    ])
    options.value = { ...options.value, outputFormat: 'png' }
    await nextTick()
    expect(quality()).toBeNull() // PNG is lossless
  })

  it('offers no face restoration where the service has none', () => {
    const { input } = mount({ ...START, faceEnhance: false }, false)
    expect(input('face-toggle').disabled).toBe(true)
  })
})

describe('OptionsPanel: models and face strength', () => {
  it('says which model each quality level runs, and when it is a stand-in', () => {
    const { text } = mount(START, true, {
      fast: { model: 'realesr-animevideov3', fallback: true },
      medium: { model: 'RealESRGAN_x2plus', fallback: false },
      high: { model: 'RealESRGAN_x4plus', fallback: false },
    })
    expect(text('quality-model-fast')).toBe('模型：realesr-animevideov3（备用：照片模型的权重未安装）')
    expect(text('quality-model-medium')).toBe('模型：RealESRGAN_x2plus')
    expect(text('quality-model-high')).toBe('模型：RealESRGAN_x4plus')
  })

  it('offers the three levels, medium included', async () => {
    const { input, changes } = mount()
    expect(['fast', 'medium', 'high'].map((l) => input(`quality-${l}`) !== null)).toEqual([true, true, true])
    input('quality-medium').click()
    await Promise.resolve()
    expect(changes.at(-1)?.quality).toBe('medium')
  })

  it('shows no model line where the fleet has not said', () => {
    const { text } = mount()
    expect([text('quality-model-fast'), text('quality-model-high')]).toEqual([null, null])
  })

  it('offers a strength slider while faces are restored, from the default 70%', async () => {
    const { options, changes, text, slider } = mount()
    expect(slider()!.value).toBe('0.7')
    expect(text('face-strength')).toContain('修复强度：70%')
    slider()!.value = '0.25'
    slider()!.dispatchEvent(new Event('input'))
    await nextTick()
    expect(changes).toEqual([{ ...START, faceStrength: 0.25 }])
    expect(text('face-strength')).toContain('修复强度：25%')
    options.value = { ...options.value, faceEnhance: false }
    await nextTick()
    expect(slider()).toBeNull() // no faces restored: nothing to weigh
  })

  it('has no slider where the service cannot restore faces', () => {
    const { slider } = mount(START, false)
    expect(slider()).toBeNull()
  })
})

describe('OptionsPanel: the default quality', () => {
  it('says why Fast is preselected on a service without a GPU, and nothing where High quality is the default', () => {
    const cpu = mount({ ...START, quality: 'fast' }, true, {}, 'fast')
    expect(cpu.input('quality-fast').checked).toBe(true)
    expect(cpu.text('quality-default')).toContain('本服务只用 CPU')
    mounted!.unmount()
    expect(mount(START).text('quality-default')).toBeNull()
  })
})
