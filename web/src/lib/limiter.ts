/**
 * Runs at most `concurrency` jobs at once, first come first served.
 *
 * Why limit: a browser opens about six HTTP/1.1 connections per host, and every image being
 * watched holds one EventSource stream; letting a 20-image batch loose would starve its own
 * downloads and the page's other requests.
 */
export interface Limiter {
  run<T>(job: () => Promise<T>): Promise<T>
  readonly active: number
  readonly waiting: number
}

export function createLimiter(concurrency: number): Limiter {
  if (!(concurrency >= 1)) throw new RangeError('concurrency must be at least 1')
  let active = 0
  const queue: Array<() => void> = []

  const next = () => {
    if (active >= concurrency) return
    const start = queue.shift()
    if (start) start()
  }

  return {
    run<T>(job: () => Promise<T>): Promise<T> {
      return new Promise<T>((resolve, reject) => {
        queue.push(() => {
          active++
          let p: Promise<T>
          try {
            p = job()
          } catch (e) {
            p = Promise.reject(e)
          }
          p.then(resolve, reject).finally(() => {
            active--
            next()
          })
        })
        next()
      })
    },
    get active() {
      return active
    },
    get waiting() {
      return queue.length
    },
  }
}
