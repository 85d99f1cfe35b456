import { RateLimiterQueue, RateLimiterQueueError, RateLimiterRes } from 'rate-limiter-flexible'
import { ConfigError, RateLimitQueueError } from '../errors.js'
import { type Duration, parseDuration } from '../util/duration.js'
import type { RateLimitPolicy } from './policy.js'

/** Options of an outbound queue, on top of its policy's. */
export interface QueueSettings {
  /**
   * The counter shared by every instance using this queue (for example one per API token).
   * @default 'queue'
   */
  key?: string
  /**
   * Most calls waiting at once in this instance; one more is rejected with `RateLimitQueueError`.
   * @default 10000
   */
  maxQueueSize?: number
}

/** Options of one {@link OutboundQueue.take} or {@link OutboundQueue.run}. */
export interface TakeOptions {
  /** Points this call uses. @default 1 */
  cost?: number
  /**
   * Give up (with `RateLimitQueueError`) when still queued after this long. Checked when the queue
   * wakes up, with one-second granularity. @default no deadline
   */
  maxWait?: Duration
}

const closedQueue = (policy: string) =>
  new RateLimitQueueError(
    'This outbound queue was closed; create a new one with kit.rateLimits.queue() to send more calls.',
    policy,
  )

/**
 * Calls to a third-party API that allows so many per window: instead of rejecting, a call waits in
 * a FIFO queue until every limit of the policy has room (counted in Redis, so all instances share
 * the budget). Built on rate-limiter-flexible's `RateLimiterQueue`.
 *
 * @example
 * const github = kit.rateLimits.queue({ name: 'github', limits: [{ points: 5000, duration: '1h' }] })
 * const repo = await github.run(() => fetch('https://api.github.com/repos/o/r'))
 */
export class OutboundQueue {
  readonly #policy: RateLimitPolicy
  readonly #queue: RateLimiterQueue
  readonly #key: string
  readonly #maxPoints: number
  #closed = false
  #detach: (() => void) | undefined

  /**
   * `isClosed` lets waiting calls fail once the kit is closed instead of retrying forever;
   * `attach` registers the queue's `close` with the kit and returns how to unregister it.
   */
  constructor(
    policy: RateLimitPolicy,
    settings: QueueSettings = {},
    isClosed: () => boolean = () => false,
    attach?: (close: () => void) => () => void,
  ) {
    this.#policy = policy
    this.#key = settings.key ?? 'queue'
    const maxQueueSize = settings.maxQueueSize ?? 10_000
    if (!Number.isSafeInteger(maxQueueSize) || maxQueueSize < 1) {
      throw new ConfigError(
        'queue.maxQueueSize',
        `must be a whole number >= 1, got ${maxQueueSize}`,
        'write 10000',
      )
    }
    this.#maxPoints = Math.min(...policy.limits.map((l) => l.points))
    // RateLimiterQueue needs `points`, `consume()` rejecting with a RateLimiterRes (wait
    // msBeforeNext, then retry) or an Error, and `get()`.
    const adapter = {
      points: this.#maxPoints,
      consume: async (key: string, tokens: number): Promise<RateLimiterRes> => {
        if (isClosed())
          throw new RateLimitQueueError('The redkit kit is closed; the queued call was dropped.', policy.name)
        if (this.#closed) throw closedQueue(policy.name)
        const result = await policy.consume(key, tokens)
        const remaining = Math.min(...result.limits.map((l) => l.remaining), this.#maxPoints)
        if (result.allowed) return new RateLimiterRes(remaining, 0, tokens)
        throw new RateLimiterRes(remaining, Math.max(1, result.retryAfterMs))
      },
      get: async (key: string): Promise<RateLimiterRes | null> => {
        const result = await policy.get(key)
        return new RateLimiterRes(Math.min(...result.limits.map((l) => l.remaining), this.#maxPoints), 0)
      },
    }
    this.#queue = new RateLimiterQueue(
      adapter as unknown as ConstructorParameters<typeof RateLimiterQueue>[0],
      {
        maxQueueSize,
      },
    )
    this.#detach = attach?.(() => this.close())
  }

  /**
   * Waits until `cost` points can be taken from every limit, takes them, and resolves with the
   * points left in the tightest limit.
   */
  async take(options: TakeOptions = {}): Promise<number> {
    if (this.#closed) throw closedQueue(this.#policy.name)
    const cost = options.cost ?? 1
    if (!Number.isSafeInteger(cost) || cost < 1) {
      throw new ConfigError('queue.take.cost', `must be a whole number >= 1, got ${cost}`, 'write cost: 1')
    }
    const deadline =
      options.maxWait === undefined
        ? 0
        : Math.ceil((Date.now() + parseDuration(options.maxWait, 'queue.take.maxWait')) / 1000)
    try {
      return await this.#queue.removeTokens(cost, this.#key, deadline)
    } catch (error) {
      if (error instanceof RateLimiterQueueError) {
        throw new RateLimitQueueError(error.message, this.#policy.name, { cause: error })
      }
      throw error
    }
  }

  /**
   * Rejects every waiting call and every later one with `RateLimitQueueError` and drops the queue's
   * wake-up timers, so no caller stays pending and no timer holds the process. Run by
   * `kit.close()`; call it for a queue the app no longer needs, which also lets the kit forget it.
   */
  close(): void {
    this.#closed = true
    this.#detach?.()
    this.#detach = undefined
    const limiters = (
      this.#queue as unknown as { _queueLimiters?: Record<string, { _processFIFO?: () => void }> }
    )._queueLimiters
    // Processing the queue once more makes each consume() see the closed kit and reject its caller.
    for (const limiter of Object.values(limiters ?? {})) limiter._processFIFO?.()
  }

  /** Waits for room (see {@link take}), then runs `call` and returns its result. */
  async run<T>(call: () => Promise<T> | T, options: TakeOptions = {}): Promise<T> {
    await this.take(options)
    return call()
  }
}
