import { LockLostError } from '../errors.js'
import type { Duration } from '../util/duration.js'

/** @internal what a lock needs from its `Locks` instance */
export interface LockOwner {
  release(lock: Lock): Promise<boolean>
  extend(lock: Lock, ttl?: Duration): Promise<Lock>
}

/**
 * A held lease on one or more resources, returned by `kit.locks.acquire()` and handed to the
 * routine of `using()`.
 */
export class Lock {
  /** The resources, in the order they were asked for. */
  readonly resources: readonly string[]
  /** The resources joined with `,` (for messages and events). */
  readonly resource: string
  /** Random value identifying this lease: only its holder can extend or release it. */
  readonly token: string
  /**
   * One fencing token per resource (same order as `resources`): strictly greater than the fence
   * of every earlier lease on that resource. Send it with each write to the protected resource and
   * let the resource reject a write whose fence is lower than one it has seen.
   */
  readonly fences: readonly number[]
  /** Lease length in ms, used again by extensions. */
  readonly ttlMs: number
  /** Epoch ms until which the lease is safe on this clock (drift already subtracted). */
  expiresAt: number
  /** @internal lock keys, then fence keys */
  readonly keys: readonly string[]
  /** @internal the lock keys alone */
  readonly lockKeys: readonly string[]
  readonly #owner: LockOwner
  #released = false
  #controller: AbortController | undefined

  /** @internal created by `Locks` */
  constructor(
    resources: readonly string[],
    token: string,
    fences: readonly number[],
    ttlMs: number,
    expiresAt: number,
    keys: readonly string[],
    owner: LockOwner,
  ) {
    this.#owner = owner
    this.resources = resources
    this.resource = resources.length === 1 ? (resources[0] as string) : resources.join(',')
    this.token = token
    this.fences = fences
    this.ttlMs = ttlMs
    this.expiresAt = expiresAt
    this.keys = keys
    this.lockKeys = resources.length === 1 ? [keys[0] as string] : keys.slice(0, resources.length)
  }

  /** The fencing token of the first (usually only) resource. */
  get fence(): number {
    return this.fences[0] as number
  }

  /** Milliseconds of safe lease left on this clock (0 once expired, lost or released). */
  get remainingMs(): number {
    return this.#released ? 0 : Math.max(0, this.expiresAt - Date.now())
  }

  /** True while the lease is safe: neither released, lost nor past its validity. */
  get valid(): boolean {
    return this.remainingMs > 0 && !this.#controller?.signal.aborted
  }

  /** Fires with a `LockLostError` reason when an extension finds the lease gone or cannot keep it. */
  get signal(): AbortSignal {
    this.#controller ??= new AbortController()
    return this.#controller.signal
  }

  /** Same as `kit.locks.release(lock)`. */
  release(): Promise<boolean> {
    return this.#owner.release(this)
  }

  /** Same as `kit.locks.extend(lock, ttl)`. */
  extend(ttl?: Duration): Promise<Lock> {
    return this.#owner.extend(this, ttl)
  }

  /** @internal */
  get released(): boolean {
    return this.#released
  }

  /** @internal */
  markReleased(): void {
    this.#released = true
    this.expiresAt = 0
  }

  /** @internal marks the lease lost and fires `signal`; returns the error (once). */
  lose(cause?: unknown): LockLostError | undefined {
    this.#controller ??= new AbortController()
    if (this.#controller.signal.aborted) return undefined
    this.expiresAt = 0
    const error =
      cause instanceof LockLostError
        ? cause
        : new LockLostError(`The lease on ${this.resource} was lost.`, { resource: this.resource, cause })
    this.#controller.abort(error)
    return error
  }
}
