// @vitest-environment happy-dom
import { afterEach, describe, expect, it } from 'vitest'
import { createApp, h, nextTick, type App } from 'vue'
import { locale } from '../i18n'
import type { Item } from '../lib/batch'
import type { ItemStatus } from '../lib/itemStatus'
import ItemCard from './ItemCard.vue'

let mounted: App | null = null

afterEach(() => {
  mounted?.unmount()
  mounted = null
  document.body.innerHTML = ''
  locale.value = 'zh'
})

function item(status: ItemStatus, taskId: string | null = 'a'.repeat(32)): Item {
  return {
    id: 'img-1', file: new File(['x'], 'cat.png'), name: 'cat.png', status, options: null,
    taskId, stage: null, message: '', progress: 0, queuePosition: null, retryIn: null, error: null, errorKey: null,
    notice: null, inputUrl: 'blob:in', output: null, result: null,
  }
}

/** The card, with the events it emits counted by name. */
function mount(it: Item) {
  const emitted: string[] = []
  const host = document.createElement('div')
  document.body.append(host)
  mounted = createApp({
    render: () => h(ItemCard, { item: it, onDelete: () => emitted.push('delete'), onRemove: () => emitted.push('remove') }),
  })
  mounted.mount(host)
  const find = (testId: string) => host.querySelector<HTMLButtonElement>(`[data-testid="${testId}"]`)
  return { host, emitted, find }
}

describe('ItemCard: deleting from the server', () => {
  it('asks before deleting, and deletes only once confirmed', async () => {
    const { emitted, find } = mount(item('completed'))
    find('delete')!.click()
    await nextTick()
    expect(emitted).toEqual([]) // nothing is deleted on the first click
    expect(find('delete-confirm')!.textContent).toContain('要从服务器删除“cat.png”的原图和处理结果吗？删除后无法恢复。')
    expect(document.activeElement).toBe(find('delete-yes'))
    find('delete-yes')!.click()
    await nextTick()
    expect(emitted).toEqual(['delete'])
    expect(find('delete-confirm')).toBeNull()
  })

  it('keeps the photo when the person changes their mind', async () => {
    const { emitted, find } = mount(item('failed'))
    find('delete')!.click()
    await nextTick()
    find('delete-no')!.click()
    await nextTick()
    expect(emitted).toEqual([])
    expect(find('delete-confirm')).toBeNull()
    expect(find('delete')).not.toBeNull()
  })

  it('speaks the page language', async () => {
    locale.value = 'en'
    const { find } = mount(item('queued'))
    expect(find('delete')!.textContent).toContain('Delete')
    find('delete')!.click()
    await nextTick()
    expect(find('delete-confirm')!.textContent).toContain('Delete “cat.png” and its result from the server? This cannot be undone.')
    expect(find('delete-no')!.textContent).toContain('Keep')
  })

  it('is offered only for a photo the server has and is not enhancing right now', () => {
    for (const status of ['queued', 'completed', 'failed', 'cancelled'] as const) {
      expect(mount(item(status)).find('delete'), status).not.toBeNull()
      mounted!.unmount()
    }
    for (const [status, taskId] of [['processing', 'a'.repeat(32)], ['uploading', null], ['pending', null], ['failed', null]] as const) {
      expect(mount(item(status, taskId)).find('delete'), status).toBeNull()
      mounted!.unmount()
    }
    mounted = null
  })
})

describe('ItemCard: time left', () => {
  const timed = (status: ItemStatus, etaSeconds: number | null, over: Partial<Item> = {}): Item =>
    ({ ...item(status), stage: status === 'processing' ? 'upscaling' : 'queued', etaSeconds, ...over })

  it('says about how long is left while the photo waits or is enhanced, in the page language', () => {
    expect(mount(timed('processing', 40)).find('item-eta')!.textContent).toContain('还需约 40 秒')
    mounted!.unmount()
    locale.value = 'en'
    expect(mount(timed('queued', 150)).find('item-eta')!.textContent).toContain('about 3 min left')
  })

  it('says nothing when the server cannot tell yet, or once there is nothing left to wait for', () => {
    for (const [status, eta, over] of [
      ['processing', null, {}], ['completed', 12, {}], ['failed', 12, {}],
      ['processing', 12, { stage: 'downloading' }], ['queued', 12, { retryIn: 5 }],
    ] as const) {
      expect(mount(timed(status, eta, over)).find('item-eta'), `${status} ${eta}`).toBeNull()
      mounted!.unmount()
    }
    mounted = null
  })
})
