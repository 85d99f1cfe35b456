import { Analytics } from './analytics/index.js'
import { type CachedFunction, type CachedOptions, CacheEngine, cached } from './cache/index.js'
import { type RedkitOptions, resolveConfig } from './connection/config.js'
import { ConnectionHub, type HealthReport, type RedisClient } from './connection/hub.js'
import { type RedkitEventName, RedkitEvents, type RedkitListener } from './events.js'
import { KeySpace } from './keys.js'
import { Locks } from './lock/index.js'
import { QueryCache } from './query-cache/index.js'
import { RateLimits } from './rate-limit/index.js'
import { Sessions } from './session/index.js'

/**
 * One kit per process: the shared Redis connection hub, the key space and the event bus, plus
 * every module (created on first use, all on the same hub).
 */
export class Redkit {
  /** Connections, circuit breaker, pub/sub; modules run their commands through `hub.exec()`. */
  readonly hub: ConnectionHub
  /** Key builder: `kit.keys.module('orders').key(id)` gives `prefix:orders:<id>`. */
  readonly keys: KeySpace
  /** Typed events of the connection and of every module. */
  readonly events: RedkitEvents
  /** First segment of every key. */
  readonly prefix: string

  constructor(options: RedkitOptions = {}) {
    const config = resolveConfig(options)
    this.prefix = config.prefix
    this.events = new RedkitEvents()
    this.keys = new KeySpace(config.prefix)
    this.hub = new ConnectionHub(config, this.events)
  }

  // Modules: each is created on first use, on this kit's hub.

  #sessions: Sessions | undefined
  /** Programmatic sessions and per-user session control (`kit.sessions.revokeAllForUser(id)`). */
  get sessions(): Sessions {
    this.#sessions ??= new Sessions(this)
    return this.#sessions
  }

  #cache: CacheEngine | undefined
  /** The cache engine (namespace `value`): get/set/getOrSet, tags, two tiers, stampede protection. */
  get cache(): CacheEngine {
    this.#cache ??= new CacheEngine(this)
    return this.#cache
  }

  #queries: QueryCache | undefined
  /** Get-or-execute cache for database queries, on the cache engine (namespace `query`). */
  get queries(): QueryCache {
    this.#queries ??= new QueryCache(this)
    return this.#queries
  }

  /**
   * Memoizes an async function in `kit.cache` (key from its arguments), with stale serving and
   * stampede protection.
   * @example
   * const getUser = kit.cached(async function getUser(id: string) { return db.user(id) }, { ttl: '5m' })
   */
  cached<A extends unknown[], R>(
    fn: (...args: A) => Promise<R>,
    options: CachedOptions<A, R> = {},
  ): CachedFunction<A, R> {
    return cached(this, fn, options)
  }

  #locks: Locks | undefined
  /** Distributed locks with fencing tokens on the kit's connection (`kit.locks.using(resource, fn)`). */
  get locks(): Locks {
    this.#locks ??= new Locks(this)
    return this.#locks
  }

  #rateLimits: RateLimits | undefined
  /** The rate limiter: multi-limit policies, blocks and outbound queues (`kit.rateLimits.consume(key, opts)`). */
  get rateLimits(): RateLimits {
    this.#rateLimits ??= new RateLimits(this)
    return this.#rateLimits
  }

  #analytics: Analytics | undefined
  /** Counters, uniques, top pages and time series (`kit.analytics.pageView('/x')`). */
  get analytics(): Analytics {
    this.#analytics ??= new Analytics(this)
    return this.#analytics
  }

  /** The shared, auto-pipelined command client, for the app's own commands. */
  get redis(): RedisClient {
    return this.hub.client
  }

  /** Listens to a kit event; returns a function that removes the listener. */
  on<K extends RedkitEventName>(event: K, listener: RedkitListener<K>): () => void {
    return this.events.on(event, listener)
  }

  /** Connected state, role, ping latency and, for Sentinel, the current master. Never throws. */
  health(): Promise<HealthReport> {
    return this.hub.health()
  }

  /**
   * Flushes modules (analytics batches, ...), then closes every connection the kit owns once
   * in-flight commands are answered. A client passed in by the app is left open. Safe to call twice.
   */
  async close(): Promise<void> {
    await this.hub.close()
    this.events.clear()
  }
}

/**
 * Creates the kit. Never throws for an unreachable server (commands then fail fast with
 * `ConnectionError` and the kit reconnects by itself); throws `ConfigError` for invalid options.
 *
 * @example
 * const kit = createRedkit({ redis: process.env.REDIS_URL, prefix: 'shop' })
 * await kit.redis.set('greeting', 'hello')
 * await kit.close()
 */
export function createRedkit(options: RedkitOptions = {}): Redkit {
  return new Redkit(options)
}
