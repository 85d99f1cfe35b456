interface Flight {
  readonly promise: Promise<unknown>
  readonly started: number
}

/**
 * In-process single flight: concurrent calls with one key share the first call's promise, so
 * `fn` runs once per key at a time. With `joinForMs`, a call is shared only that long after it
 * started: a later caller starts a new one, and a caller already waiting stops waiting then and
 * does the same, so a call that never settles holds its key for that long, not forever.
 *
 * @example
 * const flights = new SingleFlight()
 * await Promise.all([flights.run('k', load), flights.run('k', load)]) // load runs once
 * await flights.run('k', load, 10_000) // a stuck load is not joined past 10 s
 */
export class SingleFlight {
  readonly #inFlight = new Map<string, Flight>()

  run<T>(key: string, fn: () => Promise<T>, joinForMs = Number.POSITIVE_INFINITY): Promise<T> {
    const running = this.#inFlight.get(key)
    if (running) {
      const left = running.started + joinForMs - Date.now()
      if (left === Number.POSITIVE_INFINITY) return running.promise as Promise<T>
      if (left > 0) return this.#join(running, left, () => this.run(key, fn, joinForMs))
    }
    let promise: Promise<T>
    try {
      promise = fn()
    } catch (error) {
      return Promise.reject(error)
    }
    const flight: Flight = {
      promise: promise.finally(() => {
        if (this.#inFlight.get(key) === flight) this.#inFlight.delete(key)
      }),
      started: Date.now(),
    }
    this.#inFlight.set(key, flight)
    return flight.promise as Promise<T>
  }

  /** True while a call for `key` runs (and, with `joinForMs`, may still be joined). */
  has(key: string, joinForMs = Number.POSITIVE_INFINITY): boolean {
    const running = this.#inFlight.get(key)
    return running !== undefined && Date.now() - running.started < joinForMs
  }

  /** Waits for `flight` up to `ms`, then gives up on it and calls `instead`. */
  #join<T>(flight: Flight, ms: number, instead: () => Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => resolve(instead()), ms)
      flight.promise.then(
        (value) => {
          clearTimeout(timer)
          resolve(value as T)
        },
        (error: unknown) => {
          clearTimeout(timer)
          reject(error)
        },
      )
    })
  }
}
