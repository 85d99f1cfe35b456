import { ConfigError } from '../errors.js'
import { type Duration, parseDuration } from '../util/duration.js'

/** One limit of a policy: at most `points` per `duration` (a fixed window per key). */
export interface LimitOptions {
  /**
   * Name shown in the `RateLimit` / `RateLimit-Policy` headers and part of the Redis key; letters,
   * digits, `_`, `.` and `-`, at most 64 characters. Unique within a policy.
   * @default `${points}-per-${seconds}s`, for example '100-per-60s'
   */
  name?: string
  /** Points (requests, when each costs 1) allowed per window: a whole number of at least 1. */
  points: number
  /** Window length: ms or a string such as `'1s'`, `'1m'`, `'1d'`; at least one second. */
  duration: Duration
}

/** What happens to a check when Redis does not answer within the command timeout. */
export type OnRedisError = 'open' | 'closed' | 'memory'

/** Options of one rate-limit policy (shared by `kit.rateLimits` and the `rateLimit` middleware). */
export interface RateLimitPolicyOptions {
  /**
   * Policy name: its counters are kept apart from other policies' (same rules as a limit name).
   * Two middlewares or calls with the same policy name and limit names share counters.
   * @default 'default'
   */
  name?: string
  /** The limits checked together: a request passes only when every one has room. */
  limits: LimitOptions[]
  /**
   * After a request exceeds a limit, reject the key for this long (ms or string) on every
   * instance; each instance then rejects it from memory, without a Redis call, until the block
   * ends. `0` turns blocking off. The block lasts at least until the window the key exceeded
   * ends, unless `blockReplacesWindow` is set.
   * @default 0
   */
  blockDuration?: Duration
  /**
   * How a block (from `blockDuration` or `block()`) relates to the window it falls in. `false`:
   * it lasts its duration or until that window ends, whichever is later, so a block shorter than
   * the window never hands out a fresh window early. `true`: it replaces the window, as in
   * rate-limiter-flexible: the key is rejected for exactly the block's duration, then its count
   * starts afresh; what failure counters want (a 15-minute lockout within a day-long budget, as
   * `loginProtection` uses).
   * @default false
   */
  blockReplacesWindow?: boolean
  /**
   * When Redis cannot answer within the command timeout (down, failing over, circuit open):
   * `'memory'` checks the same limits in an in-process limiter (per instance, so the effective
   * limit is multiplied by the number of instances while Redis is away); `'open'` lets requests
   * through unchecked; `'closed'` rejects them (503 from the middleware).
   * @default 'memory'
   */
  onRedisError?: OnRedisError
}

/** A limit after resolution. */
export interface ResolvedLimit {
  name: string
  points: number
  durationMs: number
  /** `"name";q=..;w=..` for the RateLimit-Policy field, computed once. */
  policyItem: string
}

/** A policy after resolution: nothing optional. */
export interface ResolvedPolicy {
  name: string
  limits: ResolvedLimit[]
  blockMs: number
  blockReplacesWindow: boolean
  onRedisError: OnRedisError
}

const NAME_RE = /^[A-Za-z0-9_.-]{1,64}$/
const MODES: readonly OnRedisError[] = ['open', 'closed', 'memory']

/**
 * Checks a policy's options and returns them with every default filled in; throws `ConfigError`
 * naming the field (`${field}.limits[0].points`, ...) and what to write instead.
 */
export function resolvePolicyOptions(options: RateLimitPolicyOptions, field: string): ResolvedPolicy {
  if (!options || typeof options !== 'object') {
    throw new ConfigError(field, 'must be an object', "write { limits: [{ points: 100, duration: '1m' }] }")
  }
  const name = options.name ?? 'default'
  checkName(name, `${field}.name`)
  if (!Array.isArray(options.limits) || options.limits.length === 0) {
    throw new ConfigError(
      `${field}.limits`,
      'must be a non-empty array',
      "write limits: [{ points: 10, duration: '1s' }, { points: 1000, duration: '1d' }]",
    )
  }
  const limits = options.limits.map((limit, i) => resolveLimit(limit, `${field}.limits[${i}]`))
  const seen = new Set<string>()
  for (const [i, limit] of limits.entries()) {
    if (seen.has(limit.name)) {
      throw new ConfigError(
        `${field}.limits[${i}].name`,
        `repeats the name ${JSON.stringify(limit.name)}`,
        'give each limit of a policy its own name',
      )
    }
    seen.add(limit.name)
  }
  const blockMs = parseDuration(options.blockDuration ?? 0, `${field}.blockDuration`)
  const blockReplacesWindow = options.blockReplacesWindow ?? false
  if (typeof blockReplacesWindow !== 'boolean') {
    throw new ConfigError(
      `${field}.blockReplacesWindow`,
      `must be a boolean, got ${JSON.stringify(blockReplacesWindow)}`,
      'write blockReplacesWindow: true',
    )
  }
  const onRedisError = options.onRedisError ?? 'memory'
  if (!MODES.includes(onRedisError)) {
    throw new ConfigError(
      `${field}.onRedisError`,
      `must be 'open', 'closed' or 'memory', got ${JSON.stringify(onRedisError)}`,
      "write onRedisError: 'memory'",
    )
  }
  return { name, limits, blockMs, blockReplacesWindow, onRedisError }
}

function resolveLimit(limit: LimitOptions, field: string): ResolvedLimit {
  if (!limit || typeof limit !== 'object') {
    throw new ConfigError(field, 'must be an object', "write { points: 100, duration: '1m' }")
  }
  const { points } = limit
  if (typeof points !== 'number' || !Number.isSafeInteger(points) || points < 1) {
    throw new ConfigError(
      `${field}.points`,
      `must be a whole number of at least 1, got ${String(points)}`,
      'write points: 100',
    )
  }
  if (limit.duration === undefined) {
    throw new ConfigError(`${field}.duration`, 'is required', "write duration: '1m'")
  }
  const durationMs = parseDuration(limit.duration, `${field}.duration`)
  if (durationMs < 1000) {
    throw new ConfigError(
      `${field}.duration`,
      `must be at least one second (the RateLimit header fields count whole seconds), got ${durationMs} ms`,
      "write duration: '1s' or longer",
    )
  }
  const seconds = Math.ceil(durationMs / 1000)
  const name = limit.name ?? `${points}-per-${seconds}s`
  checkName(name, `${field}.name`)
  // Draft-ietf-httpapi-ratelimit-headers-11 §3.1: a String item with q (quota) and w (window, seconds).
  return { name, points, durationMs, policyItem: `"${name}";q=${points};w=${seconds}` }
}

function checkName(name: unknown, field: string): asserts name is string {
  if (typeof name !== 'string' || !NAME_RE.test(name)) {
    throw new ConfigError(
      field,
      `must be 1-64 letters, digits, '_', '.' or '-', got ${JSON.stringify(name)}`,
      "write a name such as 'api' or 'per-second'",
    )
  }
}

/**
 * A cost checked once at creation: a whole number of at least 1 (use `skip` to let requests
 * through for free). Throws `ConfigError` otherwise.
 */
export function checkStaticCost(cost: unknown, field: string): number {
  if (typeof cost !== 'number' || !Number.isSafeInteger(cost) || cost < 1) {
    throw new ConfigError(
      field,
      `must be a whole number of at least 1, got ${String(cost)}`,
      'write cost: 1, a function of the request, or use skip for requests that should not count',
    )
  }
  return cost
}

/**
 * The cost charged for a value computed at request time: a fraction is rounded up, and anything
 * that is not a positive finite number (0, negative, NaN, a string) is charged as 1, so a broken
 * cost function can never make a request free or unlimited.
 */
export function normalizeCost(cost: unknown): number {
  if (typeof cost !== 'number' || !(cost >= 1)) return 1
  if (cost > Number.MAX_SAFE_INTEGER) return Number.MAX_SAFE_INTEGER
  return Math.ceil(cost)
}
