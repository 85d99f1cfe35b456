/**
 * In-process single flight: concurrent calls with one key share the first call's promise, so
 * `fn` runs once per key at a time.
 *
 * @example
 * const flights = new SingleFlight()
 * await Promise.all([flights.run('k', load), flights.run('k', load)]) // load runs once
 */
export class SingleFlight {
  readonly #inFlight = new Map<string, Promise<unknown>>()

  run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const running = this.#inFlight.get(key)
    if (running) return running as Promise<T>
    let promise: Promise<T>
    try {
      promise = fn()
    } catch (error) {
      return Promise.reject(error)
    }
    const tracked = promise.finally(() => {
      if (this.#inFlight.get(key) === tracked) this.#inFlight.delete(key)
    })
    this.#inFlight.set(key, tracked)
    return tracked
  }

  /** True while a call for `key` runs. */
  has(key: string): boolean {
    return this.#inFlight.has(key)
  }
}
