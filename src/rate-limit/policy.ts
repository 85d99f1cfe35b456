import { createHash } from 'node:crypto'
import { LRUCache } from 'lru-cache'
import { RateLimiterMemory, type RateLimiterRes } from 'rate-limiter-flexible'
import { isConnectionError } from '../connection/hub.js'
import type { ModuleKeys } from '../keys.js'
import type { Redkit } from '../kit.js'
import type { ResolvedLimit, ResolvedPolicy } from './options.js'
import type { PolicyMemory, PolicyResets } from './resets.js'
import { BLOCK, CONSUME, PEEK, REFUND } from './scripts.js'

declare module '../events.js' {
  interface RedkitEventMap {
    /** A rate-limit check let a request through. */
    'ratelimit:allowed': { policy: string }
    /** A rate-limit check rejected a request (a limit exceeded, the key blocked, or fail-closed). */
    'ratelimit:blocked': { policy: string; retryAfterMs: number }
  }
}

/** State of one limit after a check. */
export interface LimitState {
  /** The limit's name, as in the RateLimit header fields. */
  name: string
  /** Points per window. */
  limit: number
  /** Points left in the current window (after this request when it was allowed). */
  remaining: number
  /** Milliseconds until the current window ends. */
  resetMs: number
}

/** Where a decision came from. */
export type RateLimitSource = 'redis' | 'block-cache' | 'memory' | 'fail-open' | 'fail-closed'

/** Answer of a rate-limit check. */
export interface RateLimitResult {
  /** True when the request may proceed (and its cost was consumed from every limit). */
  allowed: boolean
  /** Milliseconds to wait before trying again; 0 when allowed. */
  retryAfterMs: number
  /** One entry per limit of the policy (empty when Redis was down and the mode is open/closed). */
  limits: LimitState[]
  /** Names of the limits this request exceeded, or that hold the block (empty when allowed). */
  violated: string[]
  /** True when rejected because the key is blocked (`blockDuration` or `block()`). */
  blocked: boolean
  /**
   * `'redis'` (the shared counters), `'block-cache'` (a block remembered in memory: no Redis call),
   * `'memory'` (the insurance limiter, Redis being unreachable), `'fail-open'` / `'fail-closed'`.
   */
  source: RateLimitSource
}

/** Keys longer than this are hashed, so that a huge key cannot bloat Redis. */
const MAX_KEY_LENGTH = 200
/** Retry hint of a fail-closed answer: about one circuit-breaker cooldown. */
const FAIL_CLOSED_RETRY_MS = 1000
const BLOCK_CACHE_SIZE = 10_000

/**
 * One resolved policy: its limits checked together in one atomic round trip per request, its
 * in-memory block cache and its insurance limiter. Get one with `kit.rateLimits.policy(options)`.
 */
export class RateLimitPolicy {
  readonly name: string
  readonly limits: readonly ResolvedLimit[]
  readonly blockMs: number
  /** True when a block lasts exactly its duration, replacing the window (see the option). */
  readonly blockReplacesWindow: boolean
  readonly onRedisError: ResolvedPolicy['onRedisError']
  /** The `RateLimit-Policy` field value (draft-ietf-httpapi-ratelimit-headers-11 §3). */
  readonly policyField: string
  readonly #kit: Redkit
  readonly #keys: ModuleKeys
  /** Blocked keys and when their block ends (ms since epoch), so blocked requests skip Redis. */
  readonly #blocks = new LRUCache<string, number>({ max: BLOCK_CACHE_SIZE })
  readonly #limitArgs: number[]
  /** Index of the limit with the shortest window (where `block()` puts its mark). */
  readonly #shortest: number
  /** Script arguments after the cost: block ms, whether the block replaces the window, limits. */
  readonly #argsAfterCost: number[]
  /** Script arguments for the common cost of 1, built once. */
  readonly #argsCost1: number[]
  #memory: RateLimiterMemory[] | undefined
  readonly #resets: PolicyResets
  /** What a reset reaches here; registered under the policy name, held as long as this policy. */
  readonly #remembered: PolicyMemory = {
    forget: (id) => this.#forget(id),
    forgetBlocks: () => this.#forgetBlocks(),
  }

  constructor(kit: Redkit, resolved: ResolvedPolicy, resets: PolicyResets) {
    this.#kit = kit
    this.#resets = resets
    resets.add(resolved.name, this.#remembered)
    this.#keys = kit.keys.module('ratelimit')
    this.name = resolved.name
    this.limits = resolved.limits
    this.blockMs = resolved.blockMs
    this.blockReplacesWindow = resolved.blockReplacesWindow
    this.onRedisError = resolved.onRedisError
    this.policyField = resolved.limits.map((l) => l.policyItem).join(', ')
    this.#limitArgs = resolved.limits.flatMap((l) => [l.points, l.durationMs])
    this.#argsAfterCost = [this.blockMs, this.blockReplacesWindow ? 1 : 0, ...this.#limitArgs]
    this.#argsCost1 = [1, ...this.#argsAfterCost]
    let shortest = 0
    resolved.limits.forEach((l, i) => {
      if (l.durationMs < resolved.limits[shortest]!.durationMs) shortest = i
    })
    this.#shortest = shortest
  }

  /**
   * Consumes `cost` from every limit for `key` if all have room, else from none. Never throws for
   * Redis being unreachable: then `onRedisError` decides. Reply errors (a bug) are thrown.
   *
   * @example
   * const r = await policy.consume('user:42')
   * if (!r.allowed) console.log(`retry in ${r.retryAfterMs} ms`)
   */
  async consume(key: string | number, cost = 1): Promise<RateLimitResult> {
    const id = normalizeKey(key)
    const blockedFor = this.#blockedFor(id)
    let result: RateLimitResult
    if (blockedFor > 0) {
      result = this.#blockedResult(blockedFor, 'block-cache')
    } else {
      const since = this.#resets.tick
      const keys = this.#redisKeys(id)
      const args = cost === 1 ? this.#argsCost1 : [cost, ...this.#argsAfterCost]
      let reply: number[] | undefined
      try {
        reply = (await this.#kit.hub.exec((redis) =>
          redis.evalsha(CONSUME.sha, keys.length, ...keys, ...args),
        )) as number[]
      } catch (error) {
        reply = await this.#retryConsume(error, keys, args)
      }
      if (reply) {
        result = this.#parse(reply, cost)
        if (result.blocked) this.#rememberBlock(id, result.retryAfterMs, since)
      } else {
        result = await this.#fallback(id, cost, since)
      }
    }
    const events = this.#kit.events
    if (result.allowed) {
      if (events.has('ratelimit:allowed')) events.emit('ratelimit:allowed', { policy: this.name })
    } else if (events.has('ratelimit:blocked')) {
      events.emit('ratelimit:blocked', { policy: this.name, retryAfterMs: result.retryAfterMs })
    }
    return result
  }

  /**
   * EVALSHA runs without an async wrapper on the hot path (one promise less per request); the
   * first call on a server that does not know the script yet gets NOSCRIPT and is sent again with
   * EVAL. A connection failure gives `undefined` (the caller falls back); anything else is thrown.
   */
  async #retryConsume(error: unknown, keys: string[], args: number[]): Promise<number[] | undefined> {
    if (isConnectionError(error)) return undefined
    if (!(error instanceof Error) || !error.message.startsWith('NOSCRIPT')) throw error
    try {
      return (await this.#kit.hub.exec((redis) => CONSUME.run(redis, keys, args))) as number[]
    } catch (retryError) {
      if (isConnectionError(retryError)) return undefined
      throw retryError
    }
  }

  /**
   * The current state for `key` without consuming: `allowed` tells whether a cost of 1 would
   * pass now. Throws `ConnectionError` when Redis is unreachable, except in `'memory'` mode.
   */
  async get(key: string | number): Promise<RateLimitResult> {
    const id = normalizeKey(key)
    const blockedFor = this.#blockedFor(id)
    if (blockedFor > 0) return this.#blockedResult(blockedFor, 'block-cache')
    try {
      const reply = (await this.#kit.hub.exec((redis) =>
        PEEK.run(redis, this.#redisKeys(id), this.#argsCost1),
      )) as number[]
      return this.#parse(reply, 1)
    } catch (error) {
      if (!isConnectionError(error) || this.onRedisError !== 'memory') throw error
      return this.#memoryPeek(id)
    }
  }

  /**
   * Clears the counters and any block of `key`: in Redis, in the memory of every policy of this
   * name in this instance (whatever options it was looked up with), and, over the kit's pub/sub, in
   * the other instances' (within moments: they stop rejecting the key from memory once the message
   * arrives). Throws `ConnectionError` when Redis is unreachable; this instance's memory is cleared
   * all the same. A PUBLISH that fails never fails the reset: it is reported as an `error` event.
   */
  async reset(key: string | number): Promise<void> {
    const id = normalizeKey(key)
    const keys = this.#redisKeys(id)
    const deleted = this.#kit.hub.exec((redis) => redis.del(...keys))
    // Sent in the same tick, the PUBLISH follows the DEL on the one command connection, so no
    // instance hears of the reset before Redis has applied it, and a reset costs one round trip.
    // On Cluster the two go to different nodes, where only waiting for the DEL orders them.
    const published = this.#kit.hub.kind === 'cluster' ? undefined : this.#resets.publish(this.name, id)
    try {
      await deleted
    } finally {
      this.#resets.forget(this.name, id)
    }
    await (published ?? this.#resets.publish(this.name, id))
  }

  /**
   * Blocks `key` for `durationMs` on every instance and remembers it here, so this instance
   * rejects it without a Redis call. As in rate-limiter-flexible, the block is a counter set above
   * its points: the one of the shortest window, whose count matters least. Unlike there, a block
   * never ends before that window does (it would hand out a fresh window early), so it lasts
   * `durationMs` or until the window ends, whichever is later; with `blockReplacesWindow`, it
   * lasts `durationMs` and the window's count ends with it, as there.
   */
  async block(key: string | number, durationMs: number): Promise<void> {
    const id = normalizeKey(key)
    if (durationMs <= 0) return
    const since = this.#resets.tick
    // Remembered first: this instance keeps the block even if Redis cannot take it now.
    this.#rememberBlock(id, durationMs, since)
    const index = this.#shortest
    const counter = this.#redisKeys(id)[index]!
    const points = this.limits[index]!.points
    const ms = await this.#kit.hub.exec((redis) =>
      BLOCK.run(redis, [counter], [points + 1, Math.ceil(durationMs), this.blockReplacesWindow ? 1 : 0]),
    )
    this.#rememberBlock(id, Number(ms), since)
  }

  /** Gives `cost` points back to every limit of `key` (never below zero; windows unchanged). */
  async refund(key: string | number, cost = 1): Promise<void> {
    const id = normalizeKey(key)
    for (const limiter of this.#memory ?? []) {
      const state = await limiter.get(id)
      if (state && state.consumedPoints > 0) await limiter.reward(id, Math.min(cost, state.consumedPoints))
    }
    const counters = this.#redisKeys(id)
    try {
      const args = [cost, ...this.limits.map((l) => l.points)]
      await this.#kit.hub.exec((redis) => REFUND.run(redis, counters, args))
    } catch (error) {
      if (!isConnectionError(error) || this.onRedisError !== 'memory') throw error
    }
  }

  /** One counter per limit, all under one hash tag per policy and key (Cluster-safe). */
  #redisKeys(id: string): string[] {
    // The policy name cannot contain '/', and keyPart() escapes ':' and braces in the key.
    const base = this.#keys.tagged(`${this.name}/${id}`)
    const keys: string[] = []
    for (const limit of this.limits) keys.push(`${base}:${limit.name}`)
    return keys
  }

  #parse(reply: number[], cost: number): RateLimitResult {
    const status = Number(reply[0])
    const limits: LimitState[] = []
    const violated: string[] = []
    let retryAfterMs = 0
    for (let i = 0; i < this.limits.length; i++) {
      const limit = this.limits[i]!
      const used = Number(reply[1 + 2 * i])
      const ttl = Number(reply[2 + 2 * i])
      const resetMs = ttl > 0 ? ttl : limit.durationMs
      limits.push({
        name: limit.name,
        limit: limit.points,
        remaining: Math.max(0, limit.points - used),
        resetMs,
      })
      if (status !== 1 && used + cost > limit.points) {
        violated.push(limit.name)
        if (resetMs > retryAfterMs) retryAfterMs = resetMs
      }
    }
    // A rejection with blockDuration has just blocked the key (status 0); -1: it already was.
    const blocked = status === -1 || (status === 0 && this.blockMs > 0)
    return { allowed: status === 1, retryAfterMs, limits, violated, blocked, source: 'redis' }
  }

  #blockedFor(id: string): number {
    if (this.#blocks.size === 0) return 0
    const until = this.#blocks.get(id)
    if (until === undefined) return 0
    const left = until - Date.now()
    if (left > 0) return left
    this.#blocks.delete(id)
    return 0
  }

  /** Remembers a block of `id`, unless `id` was reset after the check that read `since` was sent. */
  #rememberBlock(id: string, ms: number, since: number): void {
    if (this.#resets.resetSince(this.name, id, since)) return
    const until = Date.now() + ms
    if ((this.#blocks.get(id) ?? 0) < until) this.#blocks.set(id, until)
    this.#resets.listen()
  }

  #forget(id: string): void {
    this.#blocks.delete(id)
    // The memory store works synchronously: the counts are gone when delete() returns.
    for (const limiter of this.#memory ?? []) void limiter.delete(id)
  }

  #forgetBlocks(): void {
    this.#blocks.clear()
  }

  #blockedResult(ms: number, source: RateLimitSource): RateLimitResult {
    return {
      allowed: false,
      retryAfterMs: ms,
      limits: this.limits.map((l) => ({ name: l.name, limit: l.points, remaining: 0, resetMs: ms })),
      violated: [],
      blocked: true,
      source,
    }
  }

  #fallback(id: string, cost: number, since: number): Promise<RateLimitResult> | RateLimitResult {
    if (this.onRedisError === 'memory') return this.#memoryConsume(id, cost, since)
    const allowed = this.onRedisError === 'open'
    return {
      allowed,
      retryAfterMs: allowed ? 0 : FAIL_CLOSED_RETRY_MS,
      limits: [],
      violated: [],
      blocked: false,
      source: allowed ? 'fail-open' : 'fail-closed',
    }
  }

  #memoryLimiters(): RateLimiterMemory[] {
    this.#memory ??= this.limits.map(
      (l) => new RateLimiterMemory({ points: l.points, duration: l.durationMs / 1000, keyPrefix: l.name }),
    )
    return this.#memory
  }

  /**
   * The insurance path: rate-limiter-flexible's memory limiter, one per limit. Its consume counts
   * even a rejected request, so on any rejection every limit gets the cost back (consume from
   * none, as with Redis).
   */
  async #memoryConsume(id: string, cost: number, since: number): Promise<RateLimitResult> {
    const limiters = this.#memoryLimiters()
    // Called back to back without awaiting: the memory store updates synchronously, so no other
    // request can interleave between the limits.
    const settled = await Promise.all(
      limiters.map((m) =>
        m.consume(id, cost).then(
          (res) => ({ ok: true, res }),
          (res: unknown) => ({ ok: false, res }),
        ),
      ),
    )
    for (const s of settled) if (s.res instanceof Error) throw s.res
    const allowed = settled.every((s) => s.ok)
    if (!allowed) await Promise.all(limiters.map((m) => m.reward(id, cost)))
    const limits: LimitState[] = []
    const violated: string[] = []
    let retryAfterMs = 0
    for (let i = 0; i < limiters.length; i++) {
      const limit = this.limits[i]!
      const res = settled[i]!.res as RateLimiterRes
      const resetMs = res.msBeforeNext > 0 ? res.msBeforeNext : limit.durationMs
      const used = allowed ? res.consumedPoints : res.consumedPoints - cost
      limits.push({
        name: limit.name,
        limit: limit.points,
        remaining: Math.max(0, limit.points - used),
        resetMs,
      })
      if (!settled[i]!.ok) {
        violated.push(limit.name)
        retryAfterMs = Math.max(retryAfterMs, resetMs)
      }
    }
    if (!allowed && this.blockMs > 0) {
      this.#rememberBlock(id, this.blockMs, since)
      if (this.blockReplacesWindow) {
        // As in Redis: each exceeded limit holds the block for exactly blockMs, then counts afresh.
        for (let i = 0; i < limiters.length; i++) {
          if (settled[i]!.ok) continue
          await limiters[i]!.set(id, this.limits[i]!.points + 1, this.blockMs / 1000)
          limits[i] = { ...limits[i]!, remaining: 0, resetMs: this.blockMs }
        }
        retryAfterMs = this.blockMs
      } else {
        retryAfterMs = Math.max(retryAfterMs, this.blockMs)
      }
    }
    return { allowed, retryAfterMs, limits, violated, blocked: false, source: 'memory' }
  }

  async #memoryPeek(id: string): Promise<RateLimitResult> {
    const limiters = this.#memoryLimiters()
    const limits: LimitState[] = []
    let allowed = true
    for (let i = 0; i < limiters.length; i++) {
      const limit = this.limits[i]!
      const res = await limiters[i]!.get(id)
      const used = res?.consumedPoints ?? 0
      if (used + 1 > limit.points) allowed = false
      const resetMs = res && res.msBeforeNext > 0 ? res.msBeforeNext : limit.durationMs
      limits.push({
        name: limit.name,
        limit: limit.points,
        remaining: Math.max(0, limit.points - used),
        resetMs,
      })
    }
    return { allowed, retryAfterMs: 0, limits, violated: [], blocked: false, source: 'memory' }
  }
}

/** A key as stored: strings longer than {@link MAX_KEY_LENGTH} are replaced by their SHA-256. */
export function normalizeKey(key: string | number): string {
  const text = typeof key === 'number' ? String(key) : key
  if (typeof text !== 'string') return String(text)
  return text.length > MAX_KEY_LENGTH ? `sha256-${createHash('sha256').update(text).digest('hex')}` : text
}
