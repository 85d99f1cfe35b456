import { ConfigError } from '../errors.js'
import { type Duration, parseDuration } from '../util/duration.js'

/** Options of `kit.analytics` (pass them to `kit.analytics.configure()` or `new Analytics(kit, options)`). */
export interface AnalyticsOptions {
  /**
   * Sum increments in process and write them in one pipeline per flush. `false` sends each
   * recording at once (one round trip per call; useful in tests and for very low traffic).
   * @default true
   */
  batch?: boolean
  /**
   * Longest time an increment waits in memory before it is written: also the loss window of a
   * crash (a process killed without `kit.close()` loses at most this much of counting).
   * @default 1000
   */
  flushInterval?: Duration
  /**
   * Distinct pending writes (counter buckets, page scores, visitor ids, log lines: what the
   * next pipeline carries) at which a flush starts early, before `flushInterval` elapses.
   * Recordings that add to a pending sum (the same counter, route or page in the same minute) do
   * not count again.
   * @default 1000
   */
  maxBatch?: number
  /**
   * Bound of what is kept in memory while Redis is unreachable (distinct pending entries: counter
   * buckets, page scores, visitor ids, log lines). Recordings past it are dropped and counted in
   * `stats().dropped`.
   * @default 50000
   */
  maxPending?: number
  /**
   * How long each granularity of the time series is kept (TTL of its buckets).
   * @default { minute: '1d', hour: '30d', day: '400d' }
   */
  retention?: { minute?: Duration; hour?: Duration; day?: Duration }
  /**
   * Entries kept in the log of recent events, per event type (newest first).
   * @default 100
   */
  recentEvents?: number
  /**
   * Metric and event names accepted besides the built-in ones. When set, any other name is
   * rejected (counted in `stats().rejected`); when not set, up to `maxMetrics` distinct names are
   * accepted per process.
   * @default undefined
   */
  allowMetrics?: readonly string[]
  /**
   * Distinct metric and event names one process accepts when `allowMetrics` is not set.
   * @default 200
   */
  maxMetrics?: number
  /**
   * Distinct pages (and routes) one process records per day; later new ones are counted as
   * `(other)`. The sorted set of each day is also trimmed to this many members in Redis.
   * @default 1000
   */
  maxPages?: number
  /**
   * Longest page path stored (longer ones are cut). Query strings are always removed.
   * @default 200
   */
  maxPathLength?: number
  /**
   * Largest event metadata (JSON bytes) stored in the recent-events log; a bigger one is replaced
   * by `{ truncated: true, bytes }`.
   * @default 1024
   */
  maxMetadataBytes?: number
  /**
   * Count the other modules' events (`cache:hit`, `cache:miss`, `ratelimit:blocked`, `lock:wait`)
   * into analytics counters, so the dashboard shows them.
   * @default true
   */
  trackKitEvents?: boolean
}

/** Resolved options: nothing optional, durations in milliseconds. */
export interface ResolvedAnalyticsOptions {
  batch: boolean
  flushIntervalMs: number
  maxBatch: number
  maxPending: number
  retentionMs: { minute: number; hour: number; day: number }
  recentEvents: number
  allowMetrics: ReadonlySet<string> | null
  maxMetrics: number
  maxPages: number
  maxPathLength: number
  maxMetadataBytes: number
  trackKitEvents: boolean
}

/** Defaults of {@link AnalyticsOptions}. */
export const ANALYTICS_DEFAULTS = {
  batch: true,
  flushInterval: 1000 as Duration,
  maxBatch: 1000,
  maxPending: 50_000,
  retention: { minute: '1d', hour: '30d', day: '400d' } as {
    minute: Duration
    hour: Duration
    day: Duration
  },
  recentEvents: 100,
  maxMetrics: 200,
  maxPages: 1000,
  maxPathLength: 200,
  maxMetadataBytes: 1024,
  trackKitEvents: true,
}

function defined<T extends object>(options: T): Partial<T> {
  return Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)) as Partial<T>
}

function positiveInt(field: string, value: unknown, example: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1) {
    throw new ConfigError(
      field,
      `must be a positive integer, got ${JSON.stringify(value)}`,
      `write ${example}`,
    )
  }
  return value
}

/** Resolves and checks {@link AnalyticsOptions}; throws `ConfigError` naming the bad field. */
export function resolveAnalyticsOptions(options: AnalyticsOptions = {}): ResolvedAnalyticsOptions {
  const o = { ...ANALYTICS_DEFAULTS, ...defined(options) }
  const retention = { ...ANALYTICS_DEFAULTS.retention, ...defined(options.retention ?? {}) }
  if (typeof o.batch !== 'boolean')
    throw new ConfigError('analytics.batch', 'must be a boolean', 'write true or false')
  if (typeof o.trackKitEvents !== 'boolean') {
    throw new ConfigError('analytics.trackKitEvents', 'must be a boolean', 'write true or false')
  }
  const flushIntervalMs = parseDuration(o.flushInterval, 'analytics.flushInterval')
  if (flushIntervalMs < 10) {
    throw new ConfigError(
      'analytics.flushInterval',
      `must be at least 10 ms, got ${flushIntervalMs}`,
      "write '1s'",
    )
  }
  const retentionMs = {
    minute: parseDuration(retention.minute, 'analytics.retention.minute'),
    hour: parseDuration(retention.hour, 'analytics.retention.hour'),
    day: parseDuration(retention.day, 'analytics.retention.day'),
  }
  for (const [name, ms] of Object.entries(retentionMs)) {
    if (ms < 60_000) {
      throw new ConfigError(
        `analytics.retention.${name}`,
        `must be at least one minute, got ${ms} ms`,
        "write '1d'",
      )
    }
  }
  let allowMetrics: Set<string> | null = null
  if (o.allowMetrics !== undefined) {
    if (!Array.isArray(o.allowMetrics) || o.allowMetrics.some((m) => typeof m !== 'string')) {
      throw new ConfigError(
        'analytics.allowMetrics',
        'must be an array of names',
        "write ['signup', 'checkout']",
      )
    }
    allowMetrics = new Set(o.allowMetrics)
  }
  return {
    batch: o.batch,
    flushIntervalMs,
    maxBatch: positiveInt('analytics.maxBatch', o.maxBatch, 1000),
    maxPending: positiveInt('analytics.maxPending', o.maxPending, 50_000),
    retentionMs,
    recentEvents: positiveInt('analytics.recentEvents', o.recentEvents, 100),
    allowMetrics,
    maxMetrics: positiveInt('analytics.maxMetrics', o.maxMetrics, 200),
    maxPages: positiveInt('analytics.maxPages', o.maxPages, 1000),
    maxPathLength: positiveInt('analytics.maxPathLength', o.maxPathLength, 200),
    maxMetadataBytes: positiveInt('analytics.maxMetadataBytes', o.maxMetadataBytes, 1024),
    trackKitEvents: o.trackKitEvents,
  }
}
