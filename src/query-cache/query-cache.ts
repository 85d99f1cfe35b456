import type { CacheEngine, GetOrSetOptions } from '../cache/index.js'
import { CodecError, ConfigError, QueryInputError } from '../errors.js'
import type { Redkit } from '../kit.js'
import { type Duration, parseDuration } from '../util/duration.js'
import { queryKey } from './key.js'

/** Parameters of a query: positional (`$1`, `?`) or named. */
export type QueryParams = readonly unknown[] | Record<string, unknown> | undefined

/** Options of `kit.queries` (set with `kit.queries.configure()` or `new QueryCache(kit, options)`). */
export interface QueryCacheOptions {
  /**
   * Cache namespace (keys under `prefix:cache:<name>:`, events with `cache: name`).
   * @default 'query'
   */
  name?: string
  /**
   * Time a result stays fresh.
   * @default '1m'
   */
  ttl?: Duration
  /**
   * Time an empty result (`null`, `undefined`, `[]`, `{ rows: [] }`) stays fresh; `0` does not
   * cache empty results.
   * @default the ttl
   */
  negativeTtl?: Duration
  /**
   * Past its TTL a result may be served stale for this long while one background refresh runs.
   * @default 0
   */
  grace?: Duration
  /**
   * Past its TTL a result may be served for this long when the query throws.
   * @default 0
   */
  staleIfError?: Duration
  /**
   * Fraction of each TTL removed at random so results cached together do not expire together.
   * @default 0.1
   */
  jitter?: number
  /**
   * Probabilistic early refresh (XFetch): `true` (beta 1) or a beta > 0.
   * @default false
   */
  xfetch?: boolean | number
  /**
   * Results whose encoded form exceeds this many bytes are not cached (still returned).
   * @default 1048576 (1 MiB)
   */
  maxSize?: number
  /**
   * Compress encoded results of at least this many bytes (deflate); `false` never compresses.
   * @default false
   */
  compressAbove?: number | false
  /**
   * Keep results in the in-process tier too (`false`: every hit reads Redis).
   * @default true
   */
  l1?: boolean
  /**
   * Decides which results count as empty (for `negativeTtl`).
   * @default null, undefined, an empty array, or an object whose `rows` is an empty array
   */
  isEmpty?: (result: unknown) => boolean
}

/** Per-call options of {@link QueryCache.getOrExecute}. */
export interface QueryOptions {
  /** @default the query cache's `ttl` */
  ttl?: Duration
  /** @default the query cache's `negativeTtl` */
  negativeTtl?: Duration
  /** @default the query cache's `grace` */
  grace?: Duration
  /** @default the query cache's `staleIfError` */
  staleIfError?: Duration
  /** Tags to invalidate the result by, e.g. the tables it reads. @default [] */
  tags?: readonly string[]
  /** @default the query cache's `jitter` */
  jitter?: number
  /** @default the query cache's `xfetch` */
  xfetch?: boolean | number
  /** @default the query cache's `maxSize` */
  maxSize?: number
  /** @default the query cache's `compressAbove` */
  compressAbove?: number | false
  /** Cache key replacing the derived one (it is namespaced, never sent as-is). @default version + SHA-256 of query and typed params */
  key?: string
}

/** Defaults of {@link QueryCacheOptions}. */
export const QUERY_CACHE_DEFAULTS = {
  name: 'query',
  ttl: '1m',
  grace: 0,
  staleIfError: 0,
  jitter: 0.1,
  xfetch: false,
  maxSize: 1024 * 1024,
  compressAbove: false,
  l1: true,
} as const

interface Resolved {
  name: string
  ttlMs: number
  /** Undefined: empty results use the (call's) ttl. */
  negativeTtlMs: number | undefined
  graceMs: number
  staleIfErrorMs: number
  jitter: number
  xfetch: boolean | number
  maxSize: number
  compressAbove: number | false
  l1: boolean
  isEmpty: (result: unknown) => boolean
}

/** Default emptiness: no row at all. */
export function isEmptyResult(result: unknown): boolean {
  if (result === null || result === undefined) return true
  if (Array.isArray(result)) return result.length === 0
  if (typeof result === 'object' && Array.isArray((result as { rows?: unknown }).rows)) {
    return (result as { rows: unknown[] }).rows.length === 0
  }
  return false
}

function resolveQueryCacheOptions(options: QueryCacheOptions): Resolved {
  const o = {
    ...QUERY_CACHE_DEFAULTS,
    ...Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)),
  }
  const ttlMs = parseDuration(o.ttl, 'queries.ttl')
  if (ttlMs <= 0) throw new ConfigError('queries.ttl', 'must be greater than zero', "write e.g. '1m'")
  if (o.xfetch !== false && o.xfetch !== true && !(typeof o.xfetch === 'number' && o.xfetch > 0)) {
    throw new ConfigError(
      'queries.xfetch',
      `is ${String(o.xfetch)}`,
      'write true, false or a beta > 0 such as 1',
    )
  }
  if (typeof o.l1 !== 'boolean')
    throw new ConfigError('queries.l1', `is ${String(o.l1)}`, 'write true or false')
  if (options.isEmpty !== undefined && typeof options.isEmpty !== 'function') {
    throw new ConfigError('queries.isEmpty', 'is not a function', 'pass (result) => boolean')
  }
  return {
    name: String(o.name),
    ttlMs,
    negativeTtlMs:
      options.negativeTtl === undefined
        ? undefined
        : parseDuration(options.negativeTtl, 'queries.negativeTtl'),
    graceMs: parseDuration(o.grace, 'queries.grace'),
    staleIfErrorMs: parseDuration(o.staleIfError, 'queries.staleIfError'),
    jitter: o.jitter as number,
    xfetch: o.xfetch as boolean | number,
    maxSize: o.maxSize as number,
    compressAbove: o.compressAbove as number | false,
    l1: o.l1,
    isEmpty: options.isEmpty ?? isEmptyResult,
  }
}

/**
 * Get-or-execute around database queries, on the shared cache engine (namespace `query`):
 * typed results, stampede protection across instances, stale serving, tag invalidation.
 * Redis unavailable: the query runs directly (fail open) and `cache:bypass` says so.
 *
 * @example
 * const rows = await kit.queries.getOrExecute(
 *   'SELECT * FROM orders WHERE customer_id = $1', [42],
 *   () => pool.query('SELECT * FROM orders WHERE customer_id = $1', [42]).then((r) => r.rows),
 *   { ttl: '5m', tags: ['orders'] },
 * )
 */
export class QueryCache {
  readonly #kit: Redkit
  #options: Resolved
  #engine: CacheEngine
  #defaults: GetOrSetOptions<unknown>

  constructor(kit: Redkit, options: QueryCacheOptions = {}) {
    this.#kit = kit
    this.#options = resolveQueryCacheOptions(options)
    this.#engine = this.#makeEngine()
    this.#defaults = this.#callOptions({})
  }

  /**
   * Replaces the options (checked now; throws `ConfigError`). Entries already stored keep their
   * TTLs.
   *
   * @example
   * kit.queries.configure({ ttl: '5m', grace: '1m', negativeTtl: '10s' })
   */
  configure(options: QueryCacheOptions): this {
    this.#options = resolveQueryCacheOptions(options)
    this.#engine = this.#makeEngine()
    this.#defaults = this.#callOptions({})
    return this
  }

  /** The engine namespace results live in. */
  get engine(): CacheEngine {
    return this.#engine
  }

  #makeEngine(): CacheEngine {
    const o = this.#options
    return this.#kit.cache.namespace(o.name, {
      ...(o.l1 ? {} : { l1: false }),
      ttl: o.ttlMs,
      grace: o.graceMs,
      staleIfError: o.staleIfErrorMs,
      jitter: o.jitter,
      maxSize: o.maxSize,
      compressAbove: o.compressAbove,
    })
  }

  #callOptions(options: QueryOptions): GetOrSetOptions<unknown> {
    const o = this.#options
    const ttlMs = options.ttl === undefined ? o.ttlMs : parseDuration(options.ttl, 'ttl')
    const negativeMs =
      options.negativeTtl !== undefined
        ? parseDuration(options.negativeTtl, 'negativeTtl')
        : (o.negativeTtlMs ?? ttlMs)
    const isEmpty = o.isEmpty
    const out: GetOrSetOptions<unknown> = {
      ttl: negativeMs === ttlMs ? ttlMs : (value: unknown) => (isEmpty(value) ? negativeMs : ttlMs),
      grace: options.grace ?? o.graceMs,
      staleIfError: options.staleIfError ?? o.staleIfErrorMs,
      jitter: options.jitter ?? o.jitter,
      xfetch: options.xfetch ?? o.xfetch,
      maxSize: options.maxSize ?? o.maxSize,
      compressAbove: options.compressAbove ?? o.compressAbove,
    }
    if (options.tags) out.tags = options.tags
    return out
  }

  /** The cache key of a query and its parameters (`v2:<sha256>`). Throws `CodecError` for parameters that cannot be encoded. */
  keyFor(query: string, params?: QueryParams): string {
    checkQuery(query)
    return queryKey(query, params)
  }

  /**
   * The cached result of `query` with `params`, or the result of `execute()` (stored for next
   * time). Concurrent misses across all instances run `execute` once. Results that cannot be
   * encoded or are over `maxSize` are returned but not cached (`cache:error` / `cache:bypass`);
   * so are results of a call whose parameters cannot be encoded.
   */
  async getOrExecute<T>(
    query: string,
    params: QueryParams,
    execute: () => T | Promise<T>,
    options?: QueryOptions,
  ): Promise<T> {
    checkQuery(query)
    if (typeof execute !== 'function')
      throw new QueryInputError('execute must be a function that runs the query.')
    let key: string
    try {
      key = options?.key ?? queryKey(query, params)
    } catch (error) {
      if (!(error instanceof CodecError)) throw error
      this.#kit.events.emit('cache:bypass', { cache: this.#options.name, reason: 'not-encodable' })
      this.#kit.events.emit('cache:error', { cache: this.#options.name, key: '(parameters)', error })
      return execute()
    }
    const callOptions = options ? this.#callOptions(options) : this.#defaults
    return this.#engine.getOrSet(key, () => execute(), callOptions as GetOrSetOptions<T>)
  }

  /** Deletes the cached result of `query` with `params` (every instance). */
  async invalidate(query: string, params?: QueryParams, options: { key?: string } = {}): Promise<void> {
    await this.#engine.delete(options.key ?? this.keyFor(query, params))
  }

  /** Invalidates every result tagged with one of `tags` (a few round trips however many results). */
  async invalidateTags(tags: readonly string[]): Promise<void> {
    await this.#engine.invalidateTags(tags)
  }

  /** Deletes every cached query result (SCAN on every master). */
  clear(): Promise<number> {
    return this.#engine.clear()
  }
}

const NON_BLANK = /\S/

function checkQuery(query: unknown): asserts query is string {
  if (typeof query !== 'string' || !NON_BLANK.test(query)) {
    throw new QueryInputError(
      `The query must be a non-empty string, got ${typeof query === 'string' ? "''" : typeof query}.`,
    )
  }
}
