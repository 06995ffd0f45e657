import { describe, expect, it } from 'vitest'
import { createLimiter } from './limiter'

function deferred() {
  let resolve!: () => void
  const promise = new Promise<void>((r) => (resolve = r))
  return { promise, resolve }
}

const tick = () => new Promise((r) => setTimeout(r, 0))

describe('createLimiter', () => {
  it('never runs more than the limit at once, and runs everything in order', async () => {
    const limiter = createLimiter(2)
    const gates = Array.from({ length: 5 }, deferred)
    const started: number[] = []
    let running = 0
    let peak = 0
    const all = gates.map((g, i) =>
      limiter.run(async () => {
        started.push(i)
        peak = Math.max(peak, ++running)
        await g.promise
        running--
        return i
      }),
    )
    await tick()
    expect(started).toEqual([0, 1])
    expect(limiter.waiting).toBe(3)
    gates[1]!.resolve()
    await tick()
    expect(started).toEqual([0, 1, 2])
    gates.forEach((g) => g.resolve())
    expect(await Promise.all(all)).toEqual([0, 1, 2, 3, 4])
    expect(peak).toBe(2)
    expect(limiter.active).toBe(0)
  })

  it('frees the slot when a job fails', async () => {
    const limiter = createLimiter(1)
    const failed = limiter.run(() => Promise.reject(new Error('boom')))
    const next = limiter.run(async () => 'ran')
    await expect(failed).rejects.toThrow('boom')
    await expect(next).resolves.toBe('ran')
  })
})
