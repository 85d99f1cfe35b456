import { ConfigError } from '../errors.js'
import { type Duration, parseDuration } from '../util/duration.js'

/** Options of a cache engine (`kit.cache`, `kit.cache.namespace(name, options)`). */
export interface CacheEngineOptions {
  /**
   * Namespace: keys live under `prefix:cache:<name>:` and events carry `cache: name`.
   * Letters, digits, `_` and `-`.
   * @default 'value'
   */
  name?: string
  /**
   * In-process tier in front of Redis: `false` turns it off for this namespace; `{ maxBytes }`
   * bounds it (the bound applies to the engine that creates the tier; namespaces share it).
   * @default { maxBytes: 32 * 1024 * 1024 }
   */
  l1?: false | { maxBytes?: number }
  /**
   * Time to live when a call gives none.
   * @default '5m'
   */
  ttl?: Duration
  /**
   * How long past its TTL an entry may be served stale while one background refresh runs.
   * @default 0
   */
  grace?: Duration
  /**
   * How long past its TTL an entry may be served when the factory throws.
   * @default 0
   */
  staleIfError?: Duration
  /**
   * Fraction of the TTL removed at random (0.1: each TTL is shortened by up to 10 %), so entries
   * written together do not all expire together.
   * @default 0
   */
  jitter?: number
  /**
   * Encoded values larger than this many bytes are not stored (the value is still returned).
   * @default 8 * 1024 * 1024
   */
  maxSize?: number
  /**
   * Compress encoded values of at least this many bytes (raw deflate); `false` never compresses.
   * @default false
   */
  compressAbove?: number | false
  /**
   * Lifetime of the Redis lease one process takes to compute a missing value for everyone; also
   * how long callers in the process join a computation that has not settled (then they start over).
   * @default '10s'
   */
  lease?: Duration
  /**
   * How long a process waits for another process's result before computing it itself.
   * @default '5s'
   */
  wait?: Duration
  /**
   * How long tag versions are trusted from memory without asking Redis (the bus pushes new ones
   * at once; this bounds the damage of a lost message).
   * @default '5s'
   */
  tagCacheTtl?: Duration
}

/** Engine options with nothing optional, durations in ms. */
export interface ResolvedCacheEngineOptions {
  name: string
  l1: false | { maxBytes: number }
  ttlMs: number
  graceMs: number
  staleIfErrorMs: number
  jitter: number
  maxSize: number
  compressAbove: number | false
  leaseMs: number
  waitMs: number
  tagCacheTtlMs: number
}

/** Defaults of {@link CacheEngineOptions}. */
export const CACHE_DEFAULTS = {
  name: 'value',
  l1: { maxBytes: 32 * 1024 * 1024 },
  ttl: '5m',
  grace: 0,
  staleIfError: 0,
  jitter: 0,
  maxSize: 8 * 1024 * 1024,
  compressAbove: false,
  lease: '10s',
  wait: '5s',
  tagCacheTtl: '5s',
} as const satisfies CacheEngineOptions

const NAME = /^[\w-]{1,64}$/

/** Resolves and checks engine options; throws `ConfigError` naming the bad field. */
export function resolveCacheEngineOptions(
  options: CacheEngineOptions = {},
  base: CacheEngineOptions = CACHE_DEFAULTS,
): ResolvedCacheEngineOptions {
  const o = { ...base, ...dropUndefined(options) }
  const name = String(o.name ?? CACHE_DEFAULTS.name)
  if (!NAME.test(name)) {
    throw new ConfigError(
      'cache.name',
      `is ${JSON.stringify(name)}`,
      "use letters, digits, '_' or '-' (e.g. 'query')",
    )
  }
  let l1: false | { maxBytes: number } = false
  if (o.l1 !== false) {
    const maxBytes = o.l1?.maxBytes ?? CACHE_DEFAULTS.l1.maxBytes
    if (!Number.isInteger(maxBytes) || maxBytes < 1024) {
      throw new ConfigError(
        'cache.l1.maxBytes',
        `is ${String(maxBytes)}`,
        'write a whole number of bytes ≥ 1024, or l1: false',
      )
    }
    l1 = { maxBytes }
  }
  return {
    name,
    l1,
    ttlMs: positive(parseDuration(o.ttl ?? CACHE_DEFAULTS.ttl, 'cache.ttl'), 'cache.ttl'),
    graceMs: parseDuration(o.grace ?? 0, 'cache.grace'),
    staleIfErrorMs: parseDuration(o.staleIfError ?? 0, 'cache.staleIfError'),
    jitter: checkJitter(o.jitter ?? 0, 'cache.jitter'),
    maxSize: checkSize(o.maxSize ?? CACHE_DEFAULTS.maxSize, 'cache.maxSize'),
    compressAbove: checkCompress(o.compressAbove ?? false, 'cache.compressAbove'),
    leaseMs: positive(parseDuration(o.lease ?? CACHE_DEFAULTS.lease, 'cache.lease'), 'cache.lease'),
    waitMs: parseDuration(o.wait ?? CACHE_DEFAULTS.wait, 'cache.wait'),
    tagCacheTtlMs: parseDuration(o.tagCacheTtl ?? CACHE_DEFAULTS.tagCacheTtl, 'cache.tagCacheTtl'),
  }
}

export function positive(ms: number, field: string): number {
  if (ms <= 0) throw new ConfigError(field, 'must be greater than zero', "write e.g. '30s' or 30000")
  return ms
}

export function checkJitter(value: number, field: string): number {
  if (typeof value !== 'number' || !(value >= 0 && value < 1)) {
    throw new ConfigError(field, `is ${String(value)}`, 'write a fraction between 0 and 1, e.g. 0.1')
  }
  return value
}

export function checkSize(value: number, field: string): number {
  if (!Number.isInteger(value) || value < 1) {
    throw new ConfigError(field, `is ${String(value)}`, 'write a whole number of bytes, e.g. 1048576')
  }
  return value
}

export function checkCompress(value: number | false, field: string): number | false {
  if (value === false) return false
  if (!Number.isInteger(value) || value < 0) {
    throw new ConfigError(field, `is ${String(value)}`, 'write a number of bytes (e.g. 1024) or false')
  }
  return value
}

export function dropUndefined<T extends object>(options: T): Partial<T> {
  const out: Partial<T> = {}
  for (const key of Object.keys(options) as Array<keyof T>) {
    if (options[key] !== undefined) out[key] = options[key]
  }
  return out
}
