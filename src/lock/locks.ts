import { randomUUID } from 'node:crypto'
import { isCluster } from '../connection/hub.js'
import { ConfigError, LockBusyError, LockLostError, LockUnavailableError } from '../errors.js'
import type { ModuleKeys } from '../keys.js'
import type { Redkit } from '../kit.js'
import { type Duration, parseDuration } from '../util/duration.js'
import { KeepAlive } from './keep-alive.js'
import { Lock } from './lock.js'
import { kitNode, type LockNode, poll, serverNode, type Undo } from './nodes.js'
import { runOnce } from './once.js'
import {
  type AcquireOptions,
  type LocksOptions,
  NO_RETRY,
  type OnceOptions,
  parseTtl,
  type ResolvedLocksOptions,
  type ResolvedRetry,
  resolveLocksOptions,
  resolveRetry,
  type UsingOptions,
} from './options.js'
import { ACQUIRE, EXTEND, RAISE_FENCE, RELEASE } from './scripts.js'

declare module '../events.js' {
  interface RedkitEventMap {
    /** A lease was granted after `waitedMs` (0 when free at once). */
    'lock:acquired': { resource: string; waitedMs: number }
    /** An acquisition gave up because someone else holds the resource. */
    'lock:busy': { resource: string }
    /** An acquisition had to wait (retried at least once); emitted when the wait ends. */
    'lock:wait': { resource: string; waitedMs: number }
    /** A held lease was found gone (expired, taken over) or could not be kept. */
    'lock:lost': { resource: string }
  }
}

/** What one acquisition round ended with. */
type Attempt =
  | { kind: 'granted'; lock: Lock }
  | { kind: 'busy'; leftMs: number }
  | { kind: 'unavailable'; cause: unknown }
  /** Granted, but too late to be safe (or the fence could not be settled): undone, retryable. */
  | { kind: 'slow'; cause: unknown }

interface Plan {
  resources: readonly string[]
  name: string
  /** lock keys, then fence keys */
  keys: string[]
  n: number
}

/**
 * Distributed locks on the Redlock algorithm with fencing tokens. `kit.locks` runs on the kit's
 * own connection; `createLocks(kit, { servers })` builds an instance over several independent
 * masters (a lease needs a majority).
 *
 * The Redlock rules followed here: a random token per lease; every server is asked at once and
 * a lease counts only with a majority of grants obtained within its validity (ttl minus elapsed
 * time minus drift); a failed round is undone on every server before the next; retries are
 * bounded and jittered; extension and release only touch keys still holding our token.
 */
export class Locks {
  readonly #kit: Redkit
  readonly #options: ResolvedLocksOptions
  readonly #nodes: LockNode[]
  readonly #quorum: number
  readonly #keys: ModuleKeys
  readonly #cluster: boolean
  #closed = false

  constructor(kit: Redkit, options: LocksOptions = {}) {
    this.#kit = kit
    this.#options = resolveLocksOptions(options)
    this.#keys = kit.keys.module('lock')
    this.#cluster = this.#options.servers.length === 0 && isCluster(kit.hub.client)
    this.#nodes =
      this.#options.servers.length === 0
        ? [kitNode(kit)]
        : this.#options.servers.map((s) => serverNode(s, kit.hub.commandTimeoutMs, 1000))
    this.#quorum = Math.floor(this.#nodes.length / 2) + 1
    if (this.#options.servers.length > 0) kit.hub.onClose(() => this.close())
  }

  /** Number of servers in the quorum (1 for the kit's own connection). */
  get servers(): number {
    return this.#nodes.length
  }

  /**
   * Tries once: the lock, or `null` at once when the resource is held.
   * Throws `LockUnavailableError` when Redis (a quorum of servers) cannot be reached.
   *
   * @example
   * const lock = await kit.locks.tryAcquire('invoice:42', { ttl: '10s' })
   * if (lock) try { await work(lock.fence) } finally { await lock.release() }
   */
  async tryAcquire(
    resource: string | readonly string[],
    options: { ttl?: Duration } = {},
  ): Promise<Lock | null> {
    try {
      return await this.#acquire(resource, options.ttl, NO_RETRY, undefined, undefined)
    } catch (error) {
      if (error instanceof LockBusyError) return null
      throw error
    }
  }

  /**
   * Acquires one resource or several at once (all or none), waiting with bounded, jittered
   * retries while they are held. Throws `LockBusyError` when still held after the retries,
   * `LockUnavailableError` when Redis cannot be reached, or the signal's reason when aborted.
   *
   * @example
   * const lock = await kit.locks.acquire(['account:1', 'account:2'], { ttl: '5s', wait: '2s' })
   */
  async acquire(resources: string | readonly string[], options: AcquireOptions = {}): Promise<Lock> {
    const retry = options.retry === undefined ? this.#options.retry : resolveRetry(options.retry, 'retry')
    const waitMs = options.wait === undefined ? undefined : parseDuration(options.wait, 'wait')
    return this.#acquire(resources, options.ttl, retry, waitMs, options.signal)
  }

  /**
   * Runs `routine` under the lock: acquires (like `acquire()`), extends the lease while the
   * routine runs, and releases afterwards. The routine gets the lock (with its `fence`) and an
   * AbortSignal that fires when the lease is lost (or `options.signal` fires). Returns the
   * routine's result, or throws its error: a failing release never replaces either (it is
   * reported as an `error` event).
   *
   * @example
   * const report = await kit.locks.using('report:daily', async (lock, signal) => {
   *   return build({ fence: lock.fence, signal })
   * }, { ttl: '30s' })
   */
  async using<T>(
    resources: string | readonly string[],
    routine: (lock: Lock, signal: AbortSignal) => Promise<T> | T,
    options: UsingOptions = {},
  ): Promise<T> {
    if (typeof routine !== 'function') {
      throw new ConfigError('routine', 'must be a function', 'pass async (lock, signal) => { ... }')
    }
    const lock = await this.acquire(resources, options)
    const keeper = this.#keepAlive(lock)
    const signal = options.signal ? AbortSignal.any([lock.signal, options.signal]) : lock.signal
    let result: T
    try {
      result = await routine(lock, signal)
    } catch (error) {
      await this.#finish(lock, keeper)
      throw error
    }
    await this.#finish(lock, keeper)
    return result
  }

  async #finish(lock: Lock, keeper: { stop(): Promise<void> }): Promise<void> {
    await keeper.stop()
    try {
      await this.release(lock)
    } catch (error) {
      // The lease expires by itself; the routine's outcome matters more than this failure.
      this.#kit.events.emit('error', { error: error as Error, connection: 'lock' })
    }
  }

  /**
   * Releases the lease on every server. Resolves `true` when it was still ours on a quorum,
   * `false` when it had already expired or been taken over. Throws `LockUnavailableError` when
   * the servers cannot be reached (the lease then simply expires).
   */
  async release(lock: Lock): Promise<boolean> {
    const wasValid = !lock.released
    lock.markReleased()
    if (!wasValid) return false
    const lockKeys = lock.lockKeys
    const n = lockKeys.length
    if (this.#nodes.length === 1) {
      try {
        return (await (this.#nodes[0] as LockNode).run(RELEASE, lockKeys, [lock.token])) === n
      } catch (error) {
        throw this.#unavailable(lock.resource, 0, error)
      }
    }
    const votes = await poll<number>(this.#nodes, this.#quorum, async (node) => {
      const count = Number(await node.run(RELEASE, lockKeys, [lock.token]))
      return count === n ? { granted: true, value: count } : { granted: false, leftMs: 0 }
    })
    if (votes.granted.length >= this.#quorum) return true
    if (votes.failed.length > this.#nodes.length - this.#quorum) {
      throw this.#unavailable(lock.resource, 0, votes.failed[0]?.error)
    }
    return false
  }

  /**
   * Extends the lease to `ttl` from now (default: its original ttl). Throws `LockLostError` when
   * the lease is no longer ours (and fires `lock.signal`), `LockUnavailableError` when the
   * servers cannot be reached (the lease may still be valid until `lock.expiresAt`).
   */
  async extend(lock: Lock, ttl?: Duration): Promise<Lock> {
    const ttlMs = ttl === undefined ? lock.ttlMs : parseTtl(ttl, 'ttl')
    if (lock.released) {
      throw new LockLostError(`The lease on ${lock.resource} was released.`, { resource: lock.resource })
    }
    if (!lock.valid) throw this.#lost(lock, undefined)
    const lockKeys = lock.lockKeys
    const start = Date.now()
    let granted: boolean
    if (this.#nodes.length === 1) {
      let reply: unknown
      try {
        reply = await (this.#nodes[0] as LockNode).run(EXTEND, lockKeys, [lock.token, ttlMs])
      } catch (error) {
        throw this.#unavailable(lock.resource, 0, error)
      }
      granted = reply === 1
    } else {
      const votes = await poll<number>(this.#nodes, this.#quorum, async (node) =>
        (await node.run(EXTEND, lockKeys, [lock.token, ttlMs])) === 1
          ? { granted: true, value: 1 }
          : { granted: false, leftMs: 0 },
      )
      granted = votes.granted.length >= this.#quorum
      if (!granted && votes.refused.length <= this.#nodes.length - this.#quorum) {
        throw this.#unavailable(lock.resource, 0, votes.failed[0]?.error)
      }
    }
    const expiresAt = start + ttlMs - this.#drift(ttlMs)
    if (!granted || expiresAt <= Date.now()) throw this.#lost(lock, undefined)
    // A release that raced this extension wins: the lease must stay marked as given up.
    if (!lock.released) lock.expiresAt = expiresAt
    return lock
  }

  /**
   * Runs `job` at most once per `key` across instances while its result is kept (`ttl`, default
   * 24 h): the first caller runs it and stores its (JSON) result; later callers get the stored
   * result without running it; a caller arriving while another instance runs it waits for that
   * result (up to `wait`). A job that throws stores nothing, so a later call runs it again.
   *
   * @example
   * const receipt = await kit.locks.once(`invoice:${id}:send`, () => sendInvoice(id), { ttl: '7d' })
   */
  async once<T>(
    key: string,
    job: (signal: AbortSignal) => Promise<T> | T,
    options: OnceOptions = {},
  ): Promise<T> {
    return runOnce(this.#kit, key, job, {
      ttlMs: parseTtl(options.ttl ?? '24h', 'ttl'),
      leaseMs: options.lease === undefined ? this.#options.ttlMs : parseTtl(options.lease, 'lease'),
      waitMs: parseDuration(options.wait ?? '30s', 'wait'),
    })
  }

  /** Closes the connections of servers this instance opened (also done by `kit.close()`). */
  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    await Promise.all(this.#nodes.map((n) => n.close()))
  }

  // --- acquisition ---

  #plan(resources: string | readonly string[]): Plan {
    if (typeof resources !== 'string' && !Array.isArray(resources)) {
      throw new ConfigError(
        'resources',
        `must be a string or an array of strings, got ${typeof resources}`,
        "write 'invoice:42'",
      )
    }
    const list: string[] = typeof resources === 'string' ? [resources] : [...resources]
    if (list.length === 0)
      throw new ConfigError('resources', 'is empty', "name at least one resource: 'invoice:42'")
    const keys = new Array<string>(list.length * 2)
    let firstTag: string | undefined
    for (let i = 0; i < list.length; i++) {
      const resource = list[i]
      if (typeof resource !== 'string' || resource.length === 0) {
        throw new ConfigError(
          'resource',
          `must be a non-empty string, got ${JSON.stringify(resource)}`,
          "write 'invoice:42'",
        )
      }
      const tag = this.#options.hashTag(resource)
      if (this.#cluster) {
        if (firstTag === undefined) firstTag = tag
        else if (tag !== firstTag) {
          throw new ConfigError(
            'resources',
            `span several Cluster hash tags (${JSON.stringify(firstTag)}, ${JSON.stringify(tag)}), which one script cannot touch`,
            'give resources locked together a common tag with createLocks(kit, { hashTag })',
          )
        }
      }
      keys[i] = this.#keys.tagged(tag, resource)
      keys[list.length + i] = this.#keys.tagged(tag, resource, 'fence')
    }
    if (list.length > 1 && new Set(list).size !== list.length) {
      throw new ConfigError('resources', 'name the same resource twice', 'list each resource once')
    }
    return {
      resources: list,
      name: list.length === 1 ? (list[0] as string) : list.join(','),
      keys,
      n: list.length,
    }
  }

  async #acquire(
    resources: string | readonly string[],
    ttl: Duration | undefined,
    retry: ResolvedRetry,
    waitMs: number | undefined,
    signal: AbortSignal | undefined,
  ): Promise<Lock> {
    const plan = this.#plan(resources)
    const ttlMs = ttl === undefined ? this.#options.ttlMs : parseTtl(ttl, 'ttl')
    signal?.throwIfAborted()
    const token = randomUUID()
    const started = Date.now()
    const deadline = waitMs === undefined ? Number.POSITIVE_INFINITY : started + waitMs
    const maxAttempts = waitMs === undefined ? retry.attempts + 1 : Number.POSITIVE_INFINITY
    let attempts = 0
    for (;;) {
      attempts++
      const attempt = await this.#attempt(plan, token, ttlMs)
      if (attempt.kind === 'granted') {
        this.#acquired(plan.name, started, attempts)
        return attempt.lock
      }
      if (attempt.kind === 'unavailable') {
        this.#waited(plan.name, started, attempts)
        throw this.#unavailable(plan.name, attempts, attempt.cause)
      }
      const now = Date.now()
      if (attempt.kind === 'slow') {
        if (attempts >= maxAttempts || now >= deadline) {
          this.#waited(plan.name, started, attempts)
          throw this.#unavailable(plan.name, attempts, attempt.cause)
        }
        await sleep(Math.max(1, Math.random() * retry.jitterMs), signal)
        continue
      }
      if (attempts >= maxAttempts || now >= deadline) {
        this.#waited(plan.name, started, attempts)
        this.#kit.events.emit('lock:busy', { resource: plan.name })
        throw new LockBusyError(`${plan.name} is locked by someone else (${attempts} attempt(s)).`, {
          resource: plan.name,
          attempts,
          retryAfterMs: attempt.leftMs,
        })
      }
      const base = waitMs === undefined ? retry.delayMs : Math.max(retry.delayMs, 50)
      // No point sleeping past the holder's lease; jitter spreads instances apart.
      const pause = Math.min(base, attempt.leftMs + 1) + (Math.random() * 2 - 1) * retry.jitterMs
      try {
        await sleep(Math.max(1, Math.min(pause, deadline - now)), signal)
      } catch (error) {
        this.#waited(plan.name, started, attempts)
        throw error
      }
    }
  }

  #acquired(resource: string, started: number, attempts: number): void {
    const events = this.#kit.events
    if (attempts > 1) this.#waited(resource, started, attempts)
    if (events.has('lock:acquired'))
      events.emit('lock:acquired', { resource, waitedMs: Date.now() - started })
  }

  #waited(resource: string, started: number, attempts: number): void {
    if (attempts > 1 && this.#kit.events.has('lock:wait')) {
      this.#kit.events.emit('lock:wait', { resource, waitedMs: Date.now() - started })
    }
  }

  #drift(ttlMs: number): number {
    return Math.round(this.#options.driftFactor * ttlMs) + 2
  }

  async #attempt(plan: Plan, token: string, ttlMs: number): Promise<Attempt> {
    const start = Date.now()
    const args = [token, ttlMs, plan.n]
    if (this.#nodes.length === 1) {
      const node = this.#nodes[0] as LockNode
      let reply: unknown
      try {
        reply = await node.run(ACQUIRE, plan.keys, args, this.#release(plan, token))
      } catch (error) {
        return { kind: 'unavailable', cause: error }
      }
      if (typeof reply === 'number') return { kind: 'busy', leftMs: reply }
      const expiresAt = start + ttlMs - this.#drift(ttlMs)
      if (expiresAt <= Date.now()) {
        this.#undo(plan, token)
        return { kind: 'slow', cause: new Error('acquisition took longer than the lease') }
      }
      return { kind: 'granted', lock: this.#lock(plan, token, toFences(reply, plan.n), ttlMs, expiresAt) }
    }

    const release = this.#release(plan, token)
    const votes = await poll<number[]>(this.#nodes, this.#quorum, async (node) => {
      const reply = await node.run(ACQUIRE, plan.keys, args, release)
      return typeof reply === 'number'
        ? { granted: false, leftMs: reply }
        : { granted: true, value: toFences(reply, plan.n) }
    })
    if (votes.granted.length >= this.#quorum) {
      // Each server's counter is atomic with its grant; the lease's fence is the largest of the
      // quorum, written back to a majority before the lock is handed out (see the README).
      const fences = new Array<number>(plan.n).fill(0)
      for (const { value } of votes.granted) {
        for (let i = 0; i < plan.n; i++) fences[i] = Math.max(fences[i] as number, value[i] as number)
      }
      const granters = votes.granted.map((g) => g.node)
      const raised = await poll<number>(granters, this.#quorum, async (node) =>
        (await node.run(RAISE_FENCE, plan.keys, [token, fences.join(','), plan.n])) === 1
          ? { granted: true, value: 1 }
          : { granted: false, leftMs: 0 },
      )
      const expiresAt = start + ttlMs - this.#drift(ttlMs)
      if (raised.granted.length >= this.#quorum && expiresAt > Date.now()) {
        return { kind: 'granted', lock: this.#lock(plan, token, fences, ttlMs, expiresAt) }
      }
      this.#undo(plan, token)
      return {
        kind: 'slow',
        cause: raised.failed[0]?.error ?? new Error('acquisition took longer than the lease'),
      }
    }
    this.#undo(plan, token)
    // Busy when the servers that answered would have formed a quorum had the resource been free.
    if (votes.refused.length > 0 && votes.failed.length <= this.#nodes.length - this.#quorum) {
      return { kind: 'busy', leftMs: Math.min(...votes.refused.map((r) => r.leftMs)) }
    }
    return { kind: 'unavailable', cause: votes.failed[0]?.error }
  }

  /** Undoes a failed round everywhere (partial grants would otherwise block until they expire). */
  #undo(plan: Plan, token: string): void {
    const lockKeys = plan.keys.slice(0, plan.n)
    for (const node of this.#nodes) node.run(RELEASE, lockKeys, [token]).catch(() => undefined)
  }

  /**
   * What undoes an acquisition given up on for want of an answer: a stalled server still grants
   * it when it resumes, to a token nobody holds (every retry would find it busy until it lapsed).
   */
  #release(plan: Plan, token: string): Undo {
    return { script: RELEASE, keys: plan.keys.slice(0, plan.n), args: [token] }
  }

  #lock(plan: Plan, token: string, fences: number[], ttlMs: number, expiresAt: number): Lock {
    return new Lock(plan.resources, token, fences, ttlMs, expiresAt, plan.keys, this)
  }

  #unavailable(resource: string, attempts: number, cause: unknown): LockUnavailableError {
    const reason = cause instanceof Error ? `: ${cause.message}` : ''
    const servers =
      this.#nodes.length === 1 ? 'Redis' : `a quorum of ${this.#quorum}/${this.#nodes.length} lock servers`
    return new LockUnavailableError(`Cannot lock ${resource}: ${servers} unavailable${reason}`, {
      resource,
      attempts,
      cause,
    })
  }

  #lost(lock: Lock, cause: unknown): LockLostError {
    const error = lock.lose(cause)
    if (error) this.#kit.events.emit('lock:lost', { resource: lock.resource })
    const reason = lock.signal.reason
    return reason instanceof LockLostError
      ? reason
      : new LockLostError(`The lease on ${lock.resource} was lost.`, { resource: lock.resource, cause })
  }

  // --- auto-extension ---

  #keepAlive(lock: Lock): KeepAlive {
    return new KeepAlive(lock, this.#extendLock, this.#loseLock)
  }

  readonly #extendLock = (lock: Lock): Promise<Lock> => this.extend(lock)
  readonly #loseLock = (lock: Lock, cause: unknown): void => void this.#lost(lock, cause)

  /**
   * @internal For middleware: holds `lock` alive until `stop()` (which releases it, never throws).
   * `lapse()` stops extending without releasing: the lease then runs out by itself, firing
   * `lock.signal` and `lock:lost`, unless `stop()` releases it first.
   */
  hold(lock: Lock): { stop(): Promise<void>; lapse(): void } {
    const keeper = this.#keepAlive(lock)
    return { stop: () => this.#finish(lock, keeper), lapse: () => keeper.lapse() }
  }
}

function toFences(reply: unknown, n: number): number[] {
  const list = reply as unknown[]
  const fences = new Array<number>(n)
  for (let i = 0; i < n; i++) fences[i] = Number(list[i])
  return fences
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (!signal) {
      setTimeout(resolve, ms)
      return
    }
    signal.throwIfAborted()
    const onAbort = () => {
      clearTimeout(timer)
      reject(signal.reason)
    }
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort)
      resolve()
    }, ms)
    signal.addEventListener('abort', onAbort, { once: true })
  })
}

/**
 * A `Locks` instance with its own options, for example over several independent masters
 * (Redlock quorum). Its connections are closed by `kit.close()`.
 *
 * @example
 * const locks = createLocks(kit, { servers: ['redis://a:6379', 'redis://b:6379', 'redis://c:6379'] })
 * await locks.using('payout:7', async (lock) => pay({ fence: lock.fence }))
 */
export function createLocks(kit: Redkit, options: LocksOptions = {}): Locks {
  return new Locks(kit, options)
}
