import { LockLostError } from '../errors.js'
import type { Lock } from './lock.js'

/**
 * Keeps a lease alive while its holder works: extends when half of the ttl is left, retries a
 * failed extension while the lease is still safe, and gives the lease up (firing `lock.signal`)
 * when it is gone or runs out. After `lapse()` it no longer extends, only waits for the lease to
 * run out and then gives it up the same way. One timer, no per-tick closures (it runs on every
 * `using()`).
 */
export class KeepAlive {
  readonly #lock: Lock
  readonly #extend: (lock: Lock) => Promise<Lock>
  readonly #lost: (lock: Lock, cause: unknown) => void
  #timer: NodeJS.Timeout | undefined
  #inFlight: Promise<void> | undefined
  #stopped = false
  #lapsing = false
  #extending = false

  constructor(lock: Lock, extend: (lock: Lock) => Promise<Lock>, lost: (lock: Lock, cause: unknown) => void) {
    this.#lock = lock
    this.#extend = extend
    this.#lost = lost
    this.#schedule(lock.expiresAt - Date.now() - lock.ttlMs / 2)
  }

  static #fire(self: KeepAlive): void {
    self.#timer = undefined
    self.#inFlight = self.#tick()
  }

  #schedule(delayMs: number): void {
    if (this.#stopped) return
    if (this.#timer) clearTimeout(this.#timer)
    this.#timer = setTimeout(KeepAlive.#fire, Math.max(0, delayMs), this)
    this.#timer.unref?.()
  }

  async #tick(): Promise<void> {
    const lock = this.#lock
    if (this.#stopped || lock.released) return
    // Past its validity before it could be extended (an event loop blocked longer than half the
    // ttl, or extensions that kept failing): the holder must hear of it, not carry on unguarded.
    if (!lock.valid) {
      this.#lost(lock, undefined)
      return
    }
    if (this.#lapsing) {
      this.#schedule(lock.expiresAt - Date.now())
      return
    }
    this.#extending = true
    try {
      await this.#extend(lock)
      this.#next()
    } catch (error) {
      if (error instanceof LockLostError) return
      // Unreachable for now: keep trying while the lease is still safe, then give it up.
      const left = lock.expiresAt - Date.now()
      if (left > 0) this.#schedule(this.#lapsing ? left : Math.min(200, left))
      else this.#lost(lock, error)
    } finally {
      this.#extending = false
    }
  }

  /** Schedules the next extension, or (lapsing) the end of the lease. */
  #next(): void {
    const lock = this.#lock
    this.#schedule(lock.expiresAt - Date.now() - (this.#lapsing ? 0 : lock.ttlMs / 2))
  }

  /**
   * Stops extending but keeps the lease: when it runs out (at most one ttl from now), the lease is
   * given up like a lost one, firing `lock.signal`. An extension already in flight still lands.
   */
  lapse(): void {
    if (this.#stopped || this.#lapsing) return
    this.#lapsing = true
    // An extension in flight schedules the end of the lease it obtains.
    if (!this.#extending) this.#next()
  }

  /** Stops extending and waits for an extension in flight (so a release never races it). */
  async stop(): Promise<void> {
    this.#stopped = true
    if (this.#timer) clearTimeout(this.#timer)
    if (this.#inFlight) await this.#inFlight
  }
}
