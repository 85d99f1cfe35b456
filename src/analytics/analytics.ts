import { createHash, randomBytes } from 'node:crypto'
import { isCluster, isConnectionError, type RedisClient } from '../connection/hub.js'
import type { RedkitEventName } from '../events.js'
import type { ModuleKeys } from '../keys.js'
import type { Redkit } from '../kit.js'
import {
  bucketStart,
  chunkStart,
  dayKey,
  daysBetween,
  GRANULARITIES,
  type Granularity,
  type SeriesPoint,
  toMs,
} from './buckets.js'
import { type AnalyticsOptions, type ResolvedAnalyticsOptions, resolveAnalyticsOptions } from './options.js'
import { PendingWrites } from './pending.js'

declare module '../events.js' {
  interface RedkitEventMap {
    /** The analytics middleware finished counting one request (feeds `/metrics`). */
    'analytics:request': { route: string; method: string; status: number; durationMs: number }
    /** A batch of analytics writes was sent (`ok: false`: kept in memory for the next try). */
    'analytics:flush': { commands: number; ok: boolean; durationMs: number }
    /** Recordings were dropped: the in-memory bound was reached while Redis was unreachable. */
    'analytics:dropped': { count: number }
  }
}

/** Where a page view came from: a stable, pseudonymous visitor id (never a raw IP address). */
export interface PageViewOptions {
  /** Counted once per day in the uniques of `pageviews`. */
  visitorId?: string
}

/** One request as the analytics middleware reports it. */
export interface RequestSample {
  /** Route pattern (`/products/:id`), or `(unmatched)`; never the raw URL. */
  route: string
  method: string
  status: number
  durationMs: number
  /**
   * Identifies the client for the day's uniques (the middleware passes IP and user agent). It is
   * hashed (SHA-256) with the day's salt when the batch is written, so it never reaches Redis;
   * until then it is held in process memory only.
   */
  fingerprint?: string
}

/** Range of a read. Dates, epoch milliseconds or ISO strings. */
export interface RangeOptions {
  /** @default now (for `topPages` and `uniques`: the start of today, UTC) */
  from?: Date | number | string
  /** @default now */
  to?: Date | number | string
}

/** Options of {@link Analytics.series}. */
export interface SeriesOptions extends RangeOptions {
  /** @default 'minute' */
  granularity?: Granularity
}

/** Options of {@link Analytics.topPages}. */
export interface TopOptions extends RangeOptions {
  /** @default 10 */
  limit?: number
}

/** One entry of a ranking. */
export interface RankedItem {
  path: string
  count: number
}

/** One entry of the recent-events log. */
export interface RecentEvent {
  type: string
  /** When it was recorded (epoch ms). */
  t: number
  metadata?: unknown
}

/** What one flush did. */
export interface FlushResult {
  /** Commands sent. */
  commands: number
  /** False when Redis could not be reached: the writes stay in memory for the next flush. */
  ok: boolean
}

/** Counters, uniques and the state of the writer, as returned by {@link Analytics.stats}. */
export interface AnalyticsStats {
  /** All-time count per metric (flushed writes). */
  totals: Record<string, number>
  /** Today's (UTC) count per metric. */
  today: Record<string, number>
  /** Distinct visitors of today's page views (HyperLogLog, ~0.81% standard error). */
  uniquesToday: number
  writer: {
    batch: boolean
    /** Distinct entries waiting in memory. */
    pending: number
    /** Recordings dropped because `maxPending` was reached while Redis was unreachable. */
    dropped: number
    /** Recordings refused by the input caps (unknown or too many metric names, bad values). */
    rejected: number
    flushes: number
    failedFlushes: number
    /**
     * Flushes whose reply did not come within the command timeout although the connection stayed
     * up: most likely applied, so not sent again (at most once, never counted twice).
     */
    uncertainFlushes: number
    lastFlushAt: number | null
  }
}

const DAY = 86_400_000
/** Built-in metric names; they never count against `maxMetrics`. */
const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const
const BUILTIN = new Set<string>([
  'requests',
  'pageviews',
  'latency.ms',
  ...METHODS.map((m) => `requests.${m}`),
  'requests.OTHER',
  ...[1, 2, 3, 4, 5].map((c) => `status.${c}xx`),
  'cache.hit',
  'cache.miss',
  'ratelimit.blocked',
  'lock.wait',
  'lock.wait.ms',
])
const NAME_RE = /^[\x21-\x7e]{1,64}$/
/** Bucket of unmatched requests and of pages beyond `maxPages`. */
export const OTHER = '(other)'

/**
 * SHA-256 of IP and user agent, for an app that calls `request()` itself and prefers not to hold
 * raw addresses in memory until the next flush. Like any fingerprint it is hashed again with the
 * day's salt (shared by every instance through Redis) before it is stored, so visitors can be
 * counted per day but not followed across days.
 */
export function visitorFingerprint(ip: string, userAgent: string): string {
  return createHash('sha256').update(ip).update('\n').update(userAgent).digest('base64url')
}

type Command = [string, ...Array<string | number>]

/** The current UTC day, as cached by `Analytics.#day()`. */
interface Today {
  start: number
  day: string
  expireAt: number
  key(name: string, build: () => string): string
}

/** Requests queued by {@link Analytics.request} before they are tallied together. */
const REQUEST_RUN = 256
const METHOD_METRICS = new Map<string, string>([...METHODS, 'OTHER'].map((m) => [m, `requests.${m}`]))
const STATUS_METRICS = ['status.5xx', 'status.1xx', 'status.2xx', 'status.3xx', 'status.4xx', 'status.5xx']
type Reply = [Error | null, unknown]

/**
 * Analytics counters on stock Redis: counts, events with a recent log, page views with top pages
 * and uniques (HyperLogLog), time series per minute, hour and day. Recording is synchronous and
 * never throws or waits: it adds to in-process sums that a batching writer flushes in one
 * pipeline every `flushInterval`, as soon as `maxBatch` distinct writes are pending, and on `kit.close()`.
 *
 * @example
 * kit.analytics.pageView('/pricing', { visitorId: user.id })
 * kit.analytics.event('signup', { plan: 'pro' })
 * const series = await kit.analytics.series('pageviews', { granularity: 'hour' })
 */
export class Analytics {
  readonly #kit: Redkit
  readonly #keys: ModuleKeys
  #options: ResolvedAnalyticsOptions
  #pending = new PendingWrites()
  /** Requests not yet tallied, with the time each was recorded (see {@link Analytics.request}). */
  #samples: RequestSample[] = []
  #sampleAt: number[] = []
  #timer: NodeJS.Timeout | undefined
  #inFlight: Promise<FlushResult> | null = null
  #earlyFlush = false
  /** The last flush failed: what is pending waits for the interval or the reconnect, not for maxBatch. */
  #backlogged = false
  #closed = false
  readonly #metrics = new Set<string>()
  readonly #pages = { pages: new Set<string>(), routes: new Set<string>() }
  #today: Today = { start: 0, day: '', expireAt: 0, key: (_name, build) => build() }
  readonly #salts = new Map<string, string>()
  /** Expiries sent in the current minute (key → expiry): the same one is not sent again. */
  readonly #expiriesSent = new Map<string, number>()
  #expiriesMinute = 0
  readonly #unsubscribe: Array<() => void> = []
  #dropped = 0
  #rejected = 0
  #flushes = 0
  #failedFlushes = 0
  #uncertain = 0
  #lastFlushAt: number | null = null

  constructor(kit: Redkit, options: AnalyticsOptions = {}) {
    this.#kit = kit
    this.#keys = kit.keys.module('analytics')
    this.#options = resolveAnalyticsOptions(options)
    this.#start()
    kit.hub.onClose(() => this.close())
  }

  /** The resolved options in force. */
  get options(): Readonly<ResolvedAnalyticsOptions> {
    return this.#options
  }

  /**
   * Replaces the options (defaults for what is left out); throws `ConfigError` for a bad value.
   * Pending writes are kept.
   *
   * @example
   * kit.analytics.configure({ flushInterval: '5s', allowMetrics: ['signup', 'checkout'] })
   */
  configure(options: AnalyticsOptions): this {
    const resolved = resolveAnalyticsOptions(options)
    this.#stop()
    this.#options = resolved
    this.#today = { ...this.#today, start: 0 }
    this.#start()
    return this
  }

  #start(): void {
    this.#timer = setInterval(() => {
      this.#tallyRequests()
      if (!this.#inFlight && !this.#pending.empty) void this.flush()
    }, this.#options.flushIntervalMs)
    this.#timer.unref()
    // Counts kept while Redis was away go out as soon as it is back, not one interval later.
    this.#unsubscribe.push(
      this.#kit.events.on('ready', () => {
        if (!this.#pending.empty || this.#samples.length > 0) void this.flush()
      }),
    )
    if (this.#options.trackKitEvents) this.#trackKitEvents()
  }

  #stop(): void {
    clearInterval(this.#timer)
    for (const off of this.#unsubscribe.splice(0)) off()
  }

  /** Counts the other modules' events by name, so they show before and without `/metrics`. */
  #trackKitEvents(): void {
    const on = (event: string, listener: (payload: Record<string, unknown>) => void) =>
      this.#unsubscribe.push(this.#kit.events.on(event as RedkitEventName, listener as never))
    on('cache:hit', () => this.count('cache.hit'))
    on('cache:miss', () => this.count('cache.miss'))
    on('ratelimit:blocked', () => this.count('ratelimit.blocked'))
    on('lock:wait', (payload) => {
      this.count('lock.wait')
      const waited = Number(payload?.waitedMs)
      if (Number.isFinite(waited) && waited > 0) this.count('lock.wait.ms', Math.round(waited))
    })
  }

  // ---- recording: synchronous, never throws, never waits ----

  /**
   * Adds `n` (default 1) to `metric` in every granularity of its series and in its total.
   * @example kit.analytics.count('emails.sent', 3)
   */
  count(metric: string, n = 1): void {
    if (!this.#acceptMetric(metric) || typeof n !== 'number' || !Number.isFinite(n)) {
      this.#rejected++
      return
    }
    const delta = Math.round(n)
    if (delta === 0 || !this.#admit()) return
    this.#pending.count(metric, bucketStart(Date.now(), 'minute'), delta)
    this.#recorded()
  }

  /**
   * Counts a page view: metric `pageviews`, today's top pages, and (with `visitorId`) today's
   * unique visitors. The query string is dropped; long paths are cut; past `maxPages` distinct
   * paths a day, new ones count as `(other)`.
   * @example kit.analytics.pageView('/pricing', { visitorId: session.visitorId })
   */
  pageView(path: string, options: PageViewOptions = {}): void {
    const now = Date.now()
    const today = this.#day(now)
    const page = this.#page(path, 'pages')
    if (page === null || !this.#admit()) return
    this.#pending.count('pageviews', now - (now % 60_000), 1)
    this.#rank(today, 'pages', page)
    const id = options.visitorId
    if (typeof id === 'string' && id.length > 0) {
      const key = today.key('u:pageviews', () => this.#keys.tagged('pageviews', 'u', today.day))
      this.#pending.unique(key, id.slice(0, 128))
      this.#pending.expire(key, today.expireAt)
    }
    this.#recorded()
  }

  /**
   * Counts an event of `type` (a metric of that name) and logs it, newest first, in a list capped
   * at `recentEvents` entries. Metadata larger than `maxMetadataBytes` is replaced by
   * `{ truncated: true, bytes }`.
   * @example kit.analytics.event('signup', { plan: 'pro' })
   */
  event(type: string, metadata?: Record<string, unknown>): void {
    if (!this.#acceptMetric(type)) {
      this.#rejected++
      return
    }
    if (!this.#admit()) return
    const now = Date.now()
    this.#pending.count(type, bucketStart(now, 'minute'), 1)
    const key = this.#keys.key('log', type)
    this.#pending.log(key, this.#logEntry(type, now, metadata), this.#options.recentEvents)
    this.#pending.keep.set(key, this.#options.recentEvents)
    this.#pending.expire(key, now + this.#options.retentionMs.day)
    this.#recorded()
  }

  /**
   * Counts one HTTP request (used by the `analytics()` middleware): `requests`, `requests.<METHOD>`,
   * `status.<N>xx`, `latency.ms` (sum, for averages), the day's route ranking, and for a
   * successful GET a page view of the route pattern with the salted visitor fingerprint. The
   * sample is queued and tallied with the next few hundred (at the latest on the next flush
   * tick), so keep it unchanged once handed over.
   */
  request(sample: RequestSample): void {
    if (this.#closed) return
    // Only queued here: the tallies are updated for a whole run of requests at once (every
    // REQUEST_RUN requests, at each flush and on every timer tick), which touches the counting
    // structures far less often than once per request on a busy request path.
    this.#samples.push(sample)
    this.#sampleAt.push(Date.now())
    if (this.#samples.length >= REQUEST_RUN || !this.#options.batch) this.#tallyRequests()
  }

  /** Adds the queued requests to the pending tallies (within `maxPending`). */
  #tallyRequests(): void {
    const samples = this.#samples
    if (samples.length === 0) return
    const at = this.#sampleAt
    this.#samples = []
    this.#sampleAt = []
    for (let i = 0; i < samples.length; i++) this.#tally(samples[i] as RequestSample, at[i] as number)
  }

  #tally(sample: RequestSample, now: number): void {
    if (!this.#admit()) return
    const today = this.#day(now)
    const method = METHOD_METRICS.has(sample.method) ? sample.method : 'OTHER'
    const status = sample.status
    const statusClass = status >= 100 && status < 600 ? Math.floor(status / 100) : 5
    const route = this.#page(sample.route, 'routes') ?? OTHER
    // One tally per route and minute: the per-metric counters are derived from it at flush.
    const tally = this.#pending.tally(now - (now % 60_000), method, route)
    tally.count++
    tally.byClass[statusClass] = (tally.byClass[statusClass] ?? 0) + 1
    // Summed unrounded (a fast route's requests each take well under a millisecond), rounded once
    // when written.
    const latency = sample.durationMs
    if (latency > 0 && Number.isFinite(latency)) tally.latencyMs += latency
    if (method === 'GET' && status < 400) {
      tally.pageViews++
      if (sample.fingerprint)
        this.#pending.visitor(
          today.key('v:pageviews', () => `pageviews\0${today.day}`),
          sample.fingerprint.slice(0, 512),
        )
    }
    this.#recorded()
  }

  /** Expands the request tallies of `batch` into its counters and day rankings. */
  #foldRequests(batch: PendingWrites): void {
    const keep = this.#options.maxPages + 1
    for (const [minute, tallies] of batch.requests) {
      const day = dayKey(minute)
      const expireAt = minute - (minute % DAY) + DAY + this.#options.retentionMs.day
      const routesKey = this.#keys.tagged('routes', 'top', day)
      const pagesKey = this.#keys.tagged('pages', 'top', day)
      let pages = false
      for (const t of tallies.values()) {
        batch.count('requests', minute, t.count)
        batch.count(METHOD_METRICS.get(t.method) ?? 'requests.OTHER', minute, t.count)
        t.byClass.forEach((n, c) => {
          if (n > 0) batch.count(STATUS_METRICS[c] ?? 'status.5xx', minute, n)
        })
        const latencyMs = Math.round(t.latencyMs)
        if (latencyMs > 0) batch.count('latency.ms', minute, latencyMs)
        batch.rank(routesKey, `${t.method} ${t.route}`, t.count)
        if (t.pageViews > 0) {
          batch.count('pageviews', minute, t.pageViews)
          batch.rank(pagesKey, t.route, t.pageViews)
          pages = true
        }
      }
      batch.keep.set(routesKey, keep)
      batch.expire(routesKey, expireAt)
      if (pages) {
        batch.keep.set(pagesKey, keep)
        batch.expire(pagesKey, expireAt)
      }
    }
    batch.requests.clear()
  }

  #acceptMetric(name: string): boolean {
    if (BUILTIN.has(name) || this.#metrics.has(name)) return true
    if (typeof name !== 'string' || !NAME_RE.test(name)) return false
    const allow = this.#options.allowMetrics
    if (allow ? !allow.has(name) : this.#metrics.size >= this.#options.maxMetrics) return false
    this.#metrics.add(name)
    return true
  }

  /** Cleans a path and applies the per-day distinct cap; null when it is not a string. */
  #page(path: string, ranking: 'pages' | 'routes'): string | null {
    if (typeof path !== 'string') {
      this.#rejected++
      return null
    }
    const seen = this.#pages[ranking]
    // Only clean paths are ever added, so a known one needs no cleaning (the common case).
    if (seen.has(path)) return path
    let clean = path
    const cut = clean.search(/[?#]/)
    if (cut >= 0) clean = clean.slice(0, cut)
    // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what is removed
    clean = clean.replace(/[\x00-\x1f\x7f]/g, '').slice(0, this.#options.maxPathLength) || '/'
    if (seen.has(clean)) return clean
    if (seen.size >= this.#options.maxPages) return OTHER
    seen.add(clean)
    return clean
  }

  /**
   * The current UTC day and what depends on it (key names, expiry, the per-day page caps),
   * recomputed only when the day changes: recording stays free of date formatting.
   */
  #day(now: number): Today {
    const today = this.#today
    if (now >= today.start && now < today.start + DAY) return today
    const start = now - (now % DAY)
    const day = dayKey(now)
    const keys = new Map<string, string>()
    this.#pages.pages.clear()
    this.#pages.routes.clear()
    this.#today = {
      start,
      day,
      expireAt: start + DAY + this.#options.retentionMs.day,
      key: (name, build) => {
        let key = keys.get(name)
        if (key === undefined) {
          key = build()
          keys.set(name, key)
        }
        return key
      },
    }
    return this.#today
  }

  #rank(today: Today, ranking: 'pages' | 'routes', member: string): void {
    const key = today.key(ranking, () => this.#keys.tagged(ranking, 'top', today.day))
    this.#pending.rank(key, member, 1)
    // One more than maxPages: the (other) bucket must not push out a real page.
    this.#pending.keep.set(key, this.#options.maxPages + 1)
    this.#pending.expire(key, today.expireAt)
  }

  #logEntry(type: string, t: number, metadata: unknown): string {
    if (metadata === undefined) return JSON.stringify({ type, t })
    let json: string
    try {
      json = JSON.stringify({ type, t, metadata })
    } catch {
      return JSON.stringify({ type, t, metadata: { unserializable: true } })
    }
    const bytes = Buffer.byteLength(json) - Buffer.byteLength(JSON.stringify({ type, t, metadata: null })) + 4
    if (bytes <= this.#options.maxMetadataBytes) return json
    return JSON.stringify({ type, t, metadata: { truncated: true, bytes } })
  }

  /** False (and counted) when the in-memory bound is reached. */
  #admit(): boolean {
    if (this.#closed) return false
    // One recording adds at most eight entries (a request: five counts, two ranks, a visitor).
    if (this.#pending.size + 8 <= this.#options.maxPending) return true
    this.#drop(1)
    return false
  }

  #drop(count: number): void {
    this.#dropped += count
    if (this.#kit.events.has('analytics:dropped')) this.#kit.events.emit('analytics:dropped', { count })
  }

  #recorded(): void {
    if (!this.#options.batch) {
      void this.#flushOnce()
      return
    }
    // What makes a batch big is the distinct writes it carries, not the recordings summed into
    // them: 10 000 requests to one route are one tally.
    // A backlog left by a failed flush stays above maxBatch until Redis is back: retrying it on
    // every recording would rebuild the whole batch each time for nothing.
    if (
      this.#pending.size >= this.#options.maxBatch &&
      !this.#earlyFlush &&
      !this.#inFlight &&
      !this.#backlogged
    ) {
      this.#earlyFlush = true
      setImmediate(() => {
        this.#earlyFlush = false
        void this.flush()
      })
    }
  }

  // ---- the writer ----

  /**
   * Writes everything pending now, in one pipeline (on Cluster: one auto-pipelined batch per
   * node). Never rejects: when Redis cannot be reached the writes stay in memory (up to
   * `maxPending`) and go out with a later flush.
   */
  async flush(): Promise<FlushResult> {
    while (this.#inFlight) await this.#inFlight
    this.#tallyRequests()
    if (this.#pending.empty) return { commands: 0, ok: true }
    this.#inFlight = this.#flushOnce()
    try {
      return await this.#inFlight
    } finally {
      this.#inFlight = null
    }
  }

  async #flushOnce(): Promise<FlushResult> {
    const batch = this.#pending
    if (batch.empty) return { commands: 0, ok: true }
    this.#pending = new PendingWrites()
    const started = performance.now()
    let result: FlushResult
    try {
      result = await this.#send(batch)
    } catch {
      // #send restores what failed itself; this only guards the request path from a bug.
      result = { commands: 0, ok: false }
    }
    this.#flushes++
    this.#backlogged = !result.ok
    if (!result.ok) this.#failedFlushes++
    else this.#lastFlushAt = Date.now()
    if (this.#kit.events.has('analytics:flush')) {
      this.#kit.events.emit('analytics:flush', { ...result, durationMs: performance.now() - started })
    }
    return result
  }

  async #send(batch: PendingWrites): Promise<FlushResult> {
    this.#foldRequests(batch)
    if (batch.visitors.size > 0) {
      try {
        await this.#saltVisitors(batch)
      } catch {
        this.#restore(batch)
        return { commands: 0, ok: false }
      }
    }
    // Counts stay compact in `batch` (one entry per metric and minute) so that a failed flush
    // puts back exactly what was admitted; the bucket increments exist only in this flush.
    const series = new PendingWrites()
    this.#expand(batch, series)
    const commands: Command[] = []
    const undo: Array<(() => void) | null> = []
    for (const source of [series, batch]) {
      for (const [key, fields] of source.hincr) {
        for (const [field, n] of fields) {
          commands.push(['hincrby', key, field, n])
          undo.push(() => this.#retry(source, key, (p) => p.hashIncr(key, field, n)))
        }
      }
    }
    for (const [key, members] of batch.zincr) {
      for (const [member, n] of members) {
        commands.push(['zincrby', key, n, member])
        undo.push(() => this.#retry(batch, key, (p) => p.rank(key, member, n)))
      }
    }
    for (const [key, ids] of batch.pfadd) {
      commands.push(['pfadd', key, ...ids])
      undo.push(() => {
        for (const id of ids) this.#retry(batch, key, (p) => p.unique(key, id))
      })
    }
    for (const [key, entries] of batch.lpush) {
      commands.push(['lpush', key, ...entries])
      const cap = batch.keep.get(key) ?? this.#options.recentEvents
      undo.push(() => {
        for (const e of entries) this.#retry(batch, key, (p) => p.log(key, e, cap))
      })
    }
    for (const [key, keep] of batch.keep) {
      commands.push(
        batch.lpush.has(key) ? ['ltrim', key, 0, keep - 1] : ['zremrangebyrank', key, 0, -(keep + 1)],
      )
      undo.push(null)
    }
    // A bucket's expiry is the same for every write to it: sent once a minute, not on every flush
    // (once a minute still restores it should the key have been deleted and written again).
    const minute = Math.floor(Date.now() / 60_000)
    if (minute !== this.#expiriesMinute) {
      this.#expiriesSent.clear()
      this.#expiriesMinute = minute
    }
    for (const source of [series, batch]) {
      for (const [key, at] of source.expireAt) {
        if (this.#expiriesSent.get(key) === at) continue
        this.#expiriesSent.set(key, at)
        commands.push(['pexpireat', key, at])
        undo.push(null)
      }
    }
    let replies: Reply[]
    let sentOnLiveConnection = false
    try {
      replies = await this.#kit.hub.exec((redis) => {
        sentOnLiveConnection = redis.status === 'ready'
        return runBatch(redis, commands)
      })
    } catch {
      replies = commands.map((): Reply => [new Error('Connection is closed.'), null])
    }
    const failed = replies.some(([error]) => error && isConnectionError(error))
    // Whatever did not reach Redis, the next flush sends every expiry again.
    if (failed) this.#expiriesSent.clear()
    // A batch written to a connection that is still up when it fails (a reply slower than the
    // command timeout, e.g. a blocked event loop) was most likely applied: sending it again would
    // count twice. Only a batch that never left (offline queue, open circuit) or whose connection
    // went down is put back; the hub drops timed-out commands from the offline queue, so it runs once.
    if (failed && sentOnLiveConnection && this.#kit.redis.status === 'ready') {
      this.#uncertain++
      return { commands: commands.length, ok: false }
    }
    if (replies.length > 0 && replies.every(([error]) => error && isConnectionError(error))) {
      // Nothing was written (the usual case while Redis is away): keep the compact form.
      this.#restore(batch)
      return { commands: commands.length, ok: false }
    }
    let ok = true
    replies.forEach(([error], i) => {
      if (!error) return
      if (isConnectionError(error)) {
        ok = false
        undo[i]?.()
      } else {
        this.#kit.events.emit('error', { error, connection: 'analytics' })
      }
    })
    return { commands: commands.length, ok }
  }

  /** Turns the per-minute counts of `batch` into bucket increments (minute, hour, day) and totals. */
  #expand(batch: PendingWrites, into: PendingWrites): void {
    const totals = this.#keys.key('totals')
    for (const [metric, byMinute] of batch.counts) {
      let total = 0
      for (const [minute, n] of byMinute) {
        total += n
        for (const granularity of ['minute', 'hour', 'day'] as const) {
          const chunk = chunkStart(minute, granularity)
          const { size, chunk: span, code } = GRANULARITIES[granularity]
          const key = this.#keys.key('s', code, metric, chunk)
          into.hashIncr(key, String(Math.floor((minute - chunk) / size)), n)
          into.expire(key, chunk + span + this.#options.retentionMs[granularity])
        }
      }
      into.hashIncr(totals, metric, total)
    }
  }

  async #saltVisitors(batch: PendingWrites): Promise<void> {
    const now = Date.now()
    for (const [metricDay, fingerprints] of batch.visitors) {
      const [metric = 'pageviews', day = dayKey(now)] = metricDay.split('\0')
      const salt = await this.#salt(day)
      const key = this.#keys.tagged(metric, 'u', day)
      for (const fp of fingerprints) {
        batch.unique(key, createHash('sha256').update(salt).update(fp).digest('base64url').slice(0, 22))
      }
      batch.expire(key, now - (now % DAY) + DAY + this.#options.retentionMs.day)
    }
    batch.visitors.clear()
  }

  /** The day's salt, shared by every instance: the first one to need it creates it (SET NX). */
  async #salt(day: string): Promise<string> {
    const cached = this.#salts.get(day)
    if (cached) return cached
    const key = this.#keys.key('salt', day)
    const salt = await this.#kit.hub.exec(async (redis) => {
      await redis.set(key, randomBytes(16).toString('base64url'), 'PX', 2 * DAY, 'NX')
      return redis.get(key)
    })
    if (!salt) throw new Error('salt vanished')
    if (this.#salts.size > 3) this.#salts.clear()
    this.#salts.set(day, salt)
    return salt
  }

  /** Puts one failed write of `batch` back, with its expiry and trim, within `maxPending`. */
  #retry(batch: PendingWrites, key: string, put: (pending: PendingWrites) => void): void {
    const pending = this.#pending
    if (pending.size >= this.#options.maxPending) {
      this.#drop(1)
      return
    }
    put(pending)
    const at = batch.expireAt.get(key)
    if (at !== undefined) pending.expire(key, at)
    const keep = batch.keep.get(key)
    if (keep !== undefined) pending.keep.set(key, keep)
  }

  #restore(batch: PendingWrites): void {
    for (const [metric, byMinute] of batch.counts) {
      for (const [minute, n] of byMinute) this.#retry(batch, metric, (p) => p.count(metric, minute, n))
    }
    for (const [key, fields] of batch.hincr) {
      for (const [field, n] of fields) this.#retry(batch, key, (p) => p.hashIncr(key, field, n))
    }
    for (const [key, members] of batch.zincr) {
      for (const [member, n] of members) this.#retry(batch, key, (p) => p.rank(key, member, n))
    }
    for (const [key, ids] of batch.pfadd) {
      for (const id of ids) this.#retry(batch, key, (p) => p.unique(key, id))
    }
    for (const [metricDay, fps] of batch.visitors) {
      for (const fp of fps) this.#retry(batch, metricDay, (p) => p.visitor(metricDay, fp))
    }
    for (const [key, entries] of batch.lpush) {
      const cap = batch.keep.get(key) ?? this.#options.recentEvents
      for (const e of entries) this.#retry(batch, key, (p) => p.log(key, e, cap))
    }
  }

  /** Stops the timer and flushes what is pending (called by `kit.close()`). */
  async close(): Promise<void> {
    if (this.#closed) return
    this.#stop()
    await this.flush()
    this.#closed = true
  }

  // ---- reading ----

  /**
   * The buckets of `metric` from `from` to `to` (default: the last 60 buckets), oldest first, each
   * `{ t, value }` with empty buckets as 0. At most 1440 buckets (the latest ones) are returned.
   * Shows flushed writes only.
   * @example await kit.analytics.series('requests', { granularity: 'hour', from: Date.now() - 86_400_000 })
   */
  async series(metric: string, options: SeriesOptions = {}): Promise<SeriesPoint[]> {
    const granularity = options.granularity ?? 'minute'
    const spec = GRANULARITIES[granularity]
    if (!spec) throw new RangeError(`Unknown granularity ${String(granularity)}: use minute, hour or day`)
    const to = bucketStart(toMs(options.to, Date.now()), granularity)
    let from = bucketStart(toMs(options.from, to - 59 * spec.size), granularity)
    if (from > to) return []
    from = Math.max(from, to - 1439 * spec.size)
    const chunks: number[] = []
    for (let c = chunkStart(from, granularity); c <= to; c += spec.chunk) chunks.push(c)
    const hashes = await this.#kit.hub.exec((redis) =>
      Promise.all(chunks.map((c) => redis.hgetall(this.#keys.key('s', spec.code, metric, c)))),
    )
    const points: SeriesPoint[] = []
    for (let t = from; t <= to; t += spec.size) {
      const c = chunkStart(t, granularity)
      const hash = hashes[chunks.indexOf(c)] ?? {}
      points.push({ t, value: Number(hash[String((t - c) / spec.size)] ?? 0) })
    }
    return points
  }

  /**
   * The most viewed pages from `from` to `to` (default: today, UTC), most viewed first. Several
   * days are merged with ZUNION (all days of a ranking share a hash tag, so this works on Cluster).
   * @example await kit.analytics.topPages({ limit: 5 })
   */
  topPages(options: TopOptions = {}): Promise<RankedItem[]> {
    return this.#top('pages', options)
  }

  /** Like {@link topPages} for every request counted by the middleware, as `METHOD /route`. */
  topRoutes(options: TopOptions = {}): Promise<RankedItem[]> {
    return this.#top('routes', options)
  }

  async #top(ranking: 'pages' | 'routes', options: TopOptions): Promise<RankedItem[]> {
    const now = Date.now()
    const to = toMs(options.to, now)
    const from = toMs(options.from, bucketStart(to, 'day'))
    const limit = Math.max(1, Math.min(1000, Math.floor(options.limit ?? 10)))
    const keys = daysBetween(from, to).map((day) => this.#keys.tagged(ranking, 'top', day))
    if (keys.length === 0) return []
    const reply = await this.#kit.hub.exec((redis) =>
      keys.length === 1
        ? redis.zrevrange(keys[0] as string, 0, limit - 1, 'WITHSCORES')
        : redis.call('ZUNION', keys.length, ...keys, 'WITHSCORES'),
    )
    const items = pairs(reply as unknown[])
    items.sort((a, b) => b.count - a.count || a.path.localeCompare(b.path))
    return items.slice(0, limit)
  }

  /**
   * Distinct visitors of `metric` (default `pageviews`) from `from` to `to` (default: today, UTC):
   * PFCOUNT over the days' HyperLogLogs, which merges them (standard error ~0.81%).
   * @example await kit.analytics.uniques('pageviews', { from: Date.now() - 7 * 86_400_000 })
   */
  async uniques(metric = 'pageviews', options: RangeOptions = {}): Promise<number> {
    const to = toMs(options.to, Date.now())
    const from = toMs(options.from, bucketStart(to, 'day'))
    const keys = daysBetween(from, to).map((day) => this.#keys.tagged(metric, 'u', day))
    if (keys.length === 0) return 0
    return this.#kit.hub.exec((redis) => redis.pfcount(...keys))
  }

  /**
   * The last `limit` (default 20) events of `type`, newest first.
   * @example await kit.analytics.recentEvents('signup', 5)
   */
  async recentEvents(type: string, limit = 20): Promise<RecentEvent[]> {
    const n = Math.max(1, Math.min(this.#options.recentEvents, Math.floor(limit)))
    const raw = await this.#kit.hub.exec((redis) => redis.lrange(this.#keys.key('log', type), 0, n - 1))
    const events: RecentEvent[] = []
    for (const line of raw) {
      try {
        events.push(JSON.parse(line) as RecentEvent)
      } catch {
        // A line not written by us; skip it rather than fail the whole read.
      }
    }
    return events
  }

  /** All-time and today's counts per metric, today's uniques and the writer's state. */
  async stats(): Promise<AnalyticsStats> {
    const now = Date.now()
    const dayChunk = chunkStart(now, 'day')
    const field = String((bucketStart(now, 'day') - dayChunk) / DAY)
    const totalsRaw = await this.#kit.hub.exec((redis) => redis.hgetall(this.#keys.key('totals')))
    const metrics = Object.keys(totalsRaw).sort()
    const [todays, uniquesToday] = await this.#kit.hub.exec((redis) =>
      Promise.all([
        Promise.all(metrics.map((m) => redis.hget(this.#keys.key('s', 'd', m, dayChunk), field))),
        redis.pfcount(this.#keys.tagged('pageviews', 'u', dayKey(now))),
      ]),
    )
    const totals: Record<string, number> = {}
    const today: Record<string, number> = {}
    metrics.forEach((m, i) => {
      totals[m] = Number(totalsRaw[m])
      today[m] = Number(todays[i] ?? 0)
    })
    return {
      totals,
      today,
      uniquesToday,
      writer: this.writer,
    }
  }

  /** State of the batching writer, without a round trip (works while Redis is down). */
  get writer(): AnalyticsStats['writer'] {
    return {
      batch: this.#options.batch,
      pending: this.#pending.size + this.#samples.length,
      dropped: this.#dropped,
      rejected: this.#rejected,
      flushes: this.#flushes,
      failedFlushes: this.#failedFlushes,
      uncertainFlushes: this.#uncertain,
      lastFlushAt: this.#lastFlushAt,
    }
  }
}

/** Sends `commands` in one pipeline; on Cluster each command goes through auto-pipelining (one batch per node). */
async function runBatch(redis: RedisClient, commands: Command[]): Promise<Reply[]> {
  if (isCluster(redis)) {
    const methods = redis as unknown as Record<string, (...args: Array<string | number>) => Promise<unknown>>
    return Promise.all(
      commands.map(([name, ...args]) =>
        (methods[name] as (...a: Array<string | number>) => Promise<unknown>).apply(redis, args).then(
          (value): Reply => [null, value],
          (error: Error): Reply => [error, null],
        ),
      ),
    )
  }
  const replies = await redis.pipeline(commands).exec()
  return (replies ?? []) as Reply[]
}

/** WITHSCORES replies come flat (RESP2) or as pairs (RESP3). */
function pairs(reply: unknown[]): RankedItem[] {
  const items: RankedItem[] = []
  if (reply.length > 0 && Array.isArray(reply[0])) {
    for (const pair of reply as unknown[][]) items.push({ path: String(pair[0]), count: Number(pair[1]) })
    return items
  }
  for (let i = 0; i + 1 < reply.length; i += 2)
    items.push({ path: String(reply[i]), count: Number(reply[i + 1]) })
  return items
}
