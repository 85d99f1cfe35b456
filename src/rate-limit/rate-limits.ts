import { LRUCache } from 'lru-cache'
import type { Redkit } from '../kit.js'
import { type Duration, parseDuration } from '../util/duration.js'
import { checkStaticCost, type RateLimitPolicyOptions, resolvePolicyOptions } from './options.js'
import { RateLimitPolicy, type RateLimitResult } from './policy.js'
import { OutboundQueue, type QueueSettings } from './queue.js'
import { PolicyResets } from './resets.js'

/** Options of `kit.rateLimits.consume()`: a policy plus the cost of this call. */
export interface ConsumeOptions extends RateLimitPolicyOptions {
  /** Points this call uses: a whole number of at least 1 (else `ConfigError`). @default 1 */
  cost?: number
}

/** Options of `kit.rateLimits.block()`. */
export interface BlockOptions extends RateLimitPolicyOptions {
  /** How long the key stays blocked (ms or string such as `'15m'`). */
  duration: Duration
}

/** Options of `kit.rateLimits.queue()`. */
export interface QueueOptions extends RateLimitPolicyOptions, QueueSettings {}

/** Distinct policies kept resolved (their memory limiter and block cache live with them). */
const POLICY_CACHE_SIZE = 1000

/**
 * The rate limiter, as `kit.rateLimits`: multi-limit policies checked atomically in one Redis round
 * trip (every limit has room and all are consumed, or none is), blocks, and an outbound queue.
 *
 * @example
 * const r = await kit.rateLimits.consume(`user:${id}`, {
 *   name: 'export',
 *   limits: [{ name: 'minute', points: 10, duration: '1m' }, { name: 'day', points: 500, duration: '1d' }],
 * })
 * if (!r.allowed) throw new Error(`try again in ${r.retryAfterMs} ms`)
 */
export class RateLimits {
  readonly #kit: Redkit
  readonly #policies = new LRUCache<string, RateLimitPolicy>({ max: POLICY_CACHE_SIZE })
  readonly #resets: PolicyResets

  constructor(kit: Redkit) {
    this.#kit = kit
    this.#resets = new PolicyResets(kit)
  }

  /**
   * The resolved policy for `options` (same options, same object: its block cache and memory
   * limiter are shared by every caller). Throws `ConfigError` for invalid options. Keep the
   * returned policy on hot paths to skip the lookup.
   */
  policy(options: RateLimitPolicyOptions, field = 'rateLimit'): RateLimitPolicy {
    const signature = JSON.stringify([
      options?.name,
      Array.isArray(options?.limits) ? options.limits.map((l) => [l?.name, l?.points, l?.duration]) : null,
      options?.blockDuration,
      options?.blockReplacesWindow,
      options?.onRedisError,
    ])
    let policy = this.#policies.get(signature)
    if (!policy) {
      policy = new RateLimitPolicy(this.#kit, resolvePolicyOptions(options, field), this.#resets)
      this.#policies.set(signature, policy)
    }
    return policy
  }

  /** Consumes `cost` (default 1) for `key` from every limit, or from none when one lacks room. */
  consume(key: string | number, options: ConsumeOptions): Promise<RateLimitResult> {
    const cost = options.cost === undefined ? 1 : checkStaticCost(options.cost, 'rateLimits.consume.cost')
    return this.policy(options, 'rateLimits.consume').consume(key, cost)
  }

  /** State of `key` without consuming (`allowed`: whether a cost of 1 would pass now). */
  get(key: string | number, options: RateLimitPolicyOptions): Promise<RateLimitResult> {
    return this.policy(options, 'rateLimits.get').get(key)
  }

  /**
   * Clears the counters and any block of `key` under the policy, in Redis and in what every
   * instance remembers of the policy name (the others within moments, over the kit's pub/sub).
   */
  reset(key: string | number, options: RateLimitPolicyOptions): Promise<void> {
    return this.policy(options, 'rateLimits.reset').reset(key)
  }

  /** Blocks `key` under the policy for `options.duration` on every instance. */
  block(key: string | number, options: BlockOptions): Promise<void> {
    const ms = parseDuration(options.duration, 'rateLimits.block.duration')
    return this.policy(options, 'rateLimits.block').block(key, ms)
  }

  /** Gives `cost` points back to `key` under the policy (for example after a cancelled action). */
  refund(key: string | number, options: ConsumeOptions): Promise<void> {
    const cost = options.cost === undefined ? 1 : checkStaticCost(options.cost, 'rateLimits.refund.cost')
    return this.policy(options, 'rateLimits.refund').refund(key, cost)
  }

  /**
   * A queue for outbound calls that must respect a third party's limits: calls wait (FIFO) for room
   * instead of being rejected.
   *
   * @example
   * const q = kit.rateLimits.queue({ name: 'mailer', limits: [{ points: 10, duration: '1s' }] })
   * await q.run(() => mailer.send(message))
   */
  queue(options: QueueOptions): OutboundQueue {
    return new OutboundQueue(
      this.policy(options, 'rateLimits.queue'),
      options,
      () => this.#kit.hub.closed,
      (close) => this.#kit.hub.onClose(close),
    )
  }
}
