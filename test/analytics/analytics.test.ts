import { Redis } from 'ioredis'
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest'
import {
  type Analytics,
  ConfigError,
  createRedkit,
  type Redkit,
  visitorFingerprint,
} from '../../src/index.js'
import { type StandaloneRedis, startRedis, uniquePrefix } from '../helpers/index.js'

let redis: StandaloneRedis
let raw: Redis
const kits: Redkit[] = []

function newKit(): Redkit {
  const kit = createRedkit({
    redis: redis.url,
    prefix: uniquePrefix('analytics'),
    configFile: false,
    env: {},
  })
  kits.push(kit)
  return kit
}

/** An Analytics with a long interval, so only explicit flushes write (deterministic reads). */
function manual(kit: Redkit, options: ConstructorParameters<typeof Analytics>[1] = {}): Analytics {
  return kit.analytics.configure({ flushInterval: '1h', maxBatch: 1_000_000, ...options })
}

async function until<T>(read: () => Promise<T>, ok: (v: T) => boolean, timeoutMs = 5000): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await read()
    if (ok(value) || Date.now() > deadline) return value
    await new Promise((r) => setTimeout(r, 25))
  }
}

beforeAll(async () => {
  redis = await startRedis()
  raw = new Redis(redis.url)
})
afterEach(() => {
  vi.useRealTimers()
})
afterAll(async () => {
  await Promise.all(kits.map((k) => k.close()))
  raw.disconnect()
  await redis.stop()
})

describe('counts and series', () => {
  it('sums counts into totals, today and the current minute, hour and day buckets', async () => {
    // Date alone is fixed (mid-minute, mid-hour) so no bucket boundary falls inside the test.
    vi.useFakeTimers({ toFake: ['Date'] })
    const now = Date.now()
    vi.setSystemTime(now - (now % 3_600_000) + 30 * 60_000 + 30_000)
    const a = manual(newKit())
    for (let i = 0; i < 7; i++) a.count('emails.sent')
    a.count('emails.sent', 5)
    a.count('signups', 2)
    const result = await a.flush()
    expect(result.ok).toBe(true)
    const stats = await a.stats()
    expect(stats.totals).toEqual({ 'emails.sent': 12, signups: 2 })
    expect(stats.today).toEqual({ 'emails.sent': 12, signups: 2 })
    for (const granularity of ['minute', 'hour', 'day'] as const) {
      const series = await a.series('emails.sent', { granularity })
      expect(series).toHaveLength(60)
      expect(series.at(-1)?.value).toBe(12)
      expect(series.slice(0, -1).every((p) => p.value === 0)).toBe(true)
    }
  })

  it('returns { t, value } buckets with empty ones as zero, oldest first, across chunk boundaries', async () => {
    vi.useFakeTimers({ toFake: ['Date'] })
    const a = manual(newKit())
    // Within the retention of every granularity: the hour before the current one, 58.5 minutes in.
    const now = Date.now()
    const H = 3_600_000
    const M = 60_000
    const hour = now - (now % H) - H
    const start = hour + 58 * M + 30_000
    for (const [minuteOffset, n] of [
      [0, 1],
      [1, 2],
      [3, 4],
    ] as const) {
      vi.setSystemTime(start + minuteOffset * M)
      a.count('orders', n)
    }
    await a.flush()
    const series = await a.series('orders', { from: hour + 57 * M, to: hour + 62 * M })
    expect(series).toEqual([
      { t: hour + 57 * M, value: 0 },
      { t: hour + 58 * M, value: 1 },
      { t: hour + 59 * M, value: 2 },
      { t: hour + 60 * M, value: 0 },
      { t: hour + 61 * M, value: 4 },
      { t: hour + 62 * M, value: 0 },
    ])
    const hours = await a.series('orders', { granularity: 'hour', from: hour, to: hour + H })
    expect(hours.map((p) => p.value)).toEqual([3, 4])
    const day = 86_400_000
    const today = hour + H - ((hour + H) % day)
    const days = await a.series('orders', { granularity: 'day', from: today - day, to: today })
    expect(days.map((p) => p.value)).toEqual(hour < today ? [3, 4] : [0, 7])
  })

  it('gives each granularity its own retention as a TTL', async () => {
    const kit = newKit()
    const a = manual(kit, { retention: { minute: '2h', hour: '3d', day: '90d' } })
    a.count('ttl.check')
    await a.flush()
    const keys = await raw.keys(`${kit.prefix}:analytics:s:*`)
    expect(keys).toHaveLength(3)
    const ttlOf = async (code: string) => {
      const key = keys.find((k) => k.includes(`:s:${code}:`)) as string
      return raw.pttl(key)
    }
    const minute = await ttlOf('m')
    const hour = await ttlOf('h')
    const day = await ttlOf('d')
    // Each chunk expires at its end plus the retention.
    expect(minute).toBeGreaterThan(2 * 3_600_000)
    expect(minute).toBeLessThanOrEqual(3 * 3_600_000)
    expect(hour).toBeGreaterThan(3 * 86_400_000)
    expect(hour).toBeLessThanOrEqual(4 * 86_400_000)
    expect(day).toBeGreaterThan(90 * 86_400_000)
    expect(day).toBeLessThanOrEqual(120 * 86_400_000)
  })
})

describe('visitorFingerprint', () => {
  it('is stable for one client and differs between clients, without the address in it', () => {
    const one = visitorFingerprint('203.0.113.7', 'Firefox')
    expect(visitorFingerprint('203.0.113.7', 'Firefox')).toBe(one)
    expect(visitorFingerprint('203.0.113.7', 'Chrome')).not.toBe(one)
    expect(visitorFingerprint('203.0.113.8', 'Firefox')).not.toBe(one)
    expect(one).not.toContain('203')
  })
})

describe('uniques and top pages', () => {
  it('counts distinct visitors within HyperLogLog error and a repeat visitor once', async () => {
    const a = manual(newKit())
    for (let i = 0; i < 5000; i++) a.pageView('/home', { visitorId: `visitor-${i}` })
    for (let i = 0; i < 1000; i++) a.pageView('/home', { visitorId: 'visitor-1' })
    await a.flush()
    const uniques = await a.uniques('pageviews')
    expect(Math.abs(uniques - 5000) / 5000).toBeLessThan(0.03)
    expect((await a.stats()).totals.pageviews).toBe(6000)
  })

  it('merges days for uniques and top pages over a range', async () => {
    vi.useFakeTimers({ toFake: ['Date'] })
    const a = manual(newKit())
    const day1 = Date.UTC(2026, 2, 1, 12)
    const day2 = Date.UTC(2026, 2, 2, 12)
    vi.setSystemTime(day1)
    for (let i = 0; i < 300; i++) a.pageView('/a', { visitorId: `v${i}` })
    for (let i = 0; i < 50; i++) a.pageView('/b')
    vi.setSystemTime(day2)
    // 200 of yesterday's visitors come back, 100 are new.
    for (let i = 100; i < 400; i++) a.pageView('/b', { visitorId: `v${i}` })
    a.pageView('/c?utm=x')
    await a.flush()
    expect(Math.abs((await a.uniques('pageviews', { from: day1, to: day1 })) - 300)).toBeLessThan(10)
    expect(Math.abs((await a.uniques('pageviews', { from: day2, to: day2 })) - 300)).toBeLessThan(10)
    expect(Math.abs((await a.uniques('pageviews', { from: day1, to: day2 })) - 400)).toBeLessThan(12)
    expect(await a.topPages({ from: day1, to: day1 })).toEqual([
      { path: '/a', count: 300 },
      { path: '/b', count: 50 },
    ])
    expect(await a.topPages({ from: day2, to: day2 })).toEqual([
      { path: '/b', count: 300 },
      { path: '/c', count: 1 },
    ])
    expect(await a.topPages({ from: day1, to: day2, limit: 2 })).toEqual([
      { path: '/b', count: 350 },
      { path: '/a', count: 300 },
    ])
  })

  it('keeps a capped log of recent events, newest first', async () => {
    const a = manual(newKit(), { recentEvents: 5 })
    for (let i = 0; i < 8; i++) a.event('signup', { n: i })
    await a.flush()
    a.event('signup', { n: 8 })
    await a.flush()
    const events = await a.recentEvents('signup', 50)
    expect(events.map((e) => (e.metadata as { n: number }).n)).toEqual([8, 7, 6, 5, 4])
    expect(events[0]?.type).toBe('signup')
    expect((await a.stats()).totals.signup).toBe(9)
  })
})

describe('the batching writer', () => {
  it('flushes on the interval without being asked', async () => {
    const a = newKit().analytics.configure({ flushInterval: 100 })
    a.count('interval.metric', 4)
    const stats = await until(
      () => a.stats(),
      (s) => s.totals['interval.metric'] === 4,
    )
    expect(stats.totals['interval.metric']).toBe(4)
  })

  it('flushes early once maxBatch distinct writes are pending, not after maxBatch recordings', async () => {
    vi.useFakeTimers({ toFake: ['Date'] })
    const now = Date.now()
    vi.setSystemTime(now - (now % 60_000) + 30_000)
    const a = newKit().analytics.configure({ flushInterval: '1h', maxBatch: 10 })
    // Connected first: the kit's first 'ready' flushes whatever is pending.
    await a.stats()
    for (let i = 0; i < 9; i++) a.count(`size.metric.${i}`)
    // 1000 more recordings of a pending counter add to its sum: still 9 writes to send.
    for (let i = 0; i < 1000; i++) a.count('size.metric.0')
    await new Promise((r) => setTimeout(r, 50))
    expect(a.writer).toMatchObject({ flushes: 0, pending: 9 })
    a.count('size.metric.9')
    const stats = await until(
      () => a.stats(),
      (s) => s.totals['size.metric.9'] === 1,
    )
    expect(stats.totals).toMatchObject({ 'size.metric.0': 1001, 'size.metric.8': 1, 'size.metric.9': 1 })
    expect(stats.writer.flushes).toBe(1)
  })

  it('sends one pipeline per flush whatever the number of recordings', async () => {
    vi.useFakeTimers({ toFake: ['Date'] })
    const now = Date.now()
    vi.setSystemTime(now - (now % 60_000) + 30_000)
    const kit = newKit()
    const a = manual(kit)
    const sent: number[] = []
    kit.on('analytics:flush', ({ commands }) => sent.push(commands))
    for (let i = 0; i < 10_000; i++) a.count('many')
    const result = await a.flush()
    // 3 bucket increments + total + 3 expiries: the 10 000 recordings became 7 commands.
    expect(result).toEqual({ commands: 7, ok: true })
    expect(sent).toEqual([7])
    expect((await a.stats()).totals.many).toBe(10_000)
  })

  it('sends a bucket expiry once a minute, not on every flush, and again after a failed flush', async () => {
    vi.useFakeTimers({ toFake: ['Date'] })
    const now = Date.now()
    const start = now - (now % 3_600_000) + 10 * 60_000 + 5_000
    vi.setSystemTime(start)
    const kit = newKit()
    const a = manual(kit)
    a.count('expiring')
    expect(await a.flush()).toEqual({ commands: 7, ok: true })
    a.count('expiring')
    // Same minute: the 3 bucket increments and the total only.
    expect(await a.flush()).toEqual({ commands: 4, ok: true })
    const buckets = await raw.keys(`${kit.prefix}:analytics:s:*:expiring:*`)
    expect(buckets).toHaveLength(3)
    for (const key of buckets) expect(await raw.pttl(key)).toBeGreaterThan(0)
    // A bucket deleted behind our back gets its expiry back with the next minute's first flush.
    await raw.del(...buckets)
    a.count('expiring')
    await a.flush()
    expect(await raw.pttl(buckets[0] as string)).toBe(-1)
    vi.setSystemTime(start + 60_000)
    a.count('expiring')
    expect(await a.flush()).toEqual({ commands: 7, ok: true })
    for (const key of buckets) expect(await raw.pttl(key)).toBeGreaterThan(0)
  })

  it('flushes what is pending on kit.close()', async () => {
    const kit = newKit()
    const a = manual(kit)
    a.count('closing', 3)
    a.pageView('/bye', { visitorId: 'x' })
    await kit.close()
    const totals = await raw.hgetall(`${kit.prefix}:analytics:totals`)
    expect(totals).toEqual({ closing: '3', pageviews: '1' })
  })

  it('tallies queued requests in the minute each was recorded, summing latency unrounded', async () => {
    vi.useFakeTimers({ toFake: ['Date'] })
    const now = Date.now()
    const minute = now - (now % 60_000) + 60_000
    vi.setSystemTime(minute + 59_000)
    const a = manual(newKit())
    // Fewer than one run of requests: queued, not yet tallied, but reported as pending.
    for (let i = 0; i < 100; i++) a.request({ route: '/fast', method: 'GET', status: 200, durationMs: 0.4 })
    vi.setSystemTime(minute + 61_000)
    a.request({ route: '/fast', method: 'POST', status: 503, durationMs: 0.4 })
    expect(a.writer.pending).toBe(101)
    expect(await a.flush()).toMatchObject({ ok: true })
    const series = await a.series('requests', { from: minute, to: minute + 60_000 })
    expect(series).toEqual([
      { t: minute, value: 100 },
      { t: minute + 60_000, value: 1 },
    ])
    const latency = await a.series('latency.ms', { from: minute, to: minute + 60_000 })
    // 100 × 0.4 ms is 40 ms, not 100 × round(0.4) = 0.
    expect(latency).toEqual([
      { t: minute, value: 40 },
      { t: minute + 60_000, value: 0 },
    ])
    const { totals } = await a.stats()
    expect(totals).toMatchObject({ requests: 101, 'requests.GET': 100, 'requests.POST': 1, 'status.5xx': 1 })
  })

  it('tallies a full run of 256 queued requests at once, which can start an early flush', async () => {
    vi.useFakeTimers({ toFake: ['Date'] })
    const now = Date.now()
    vi.setSystemTime(now - (now % 60_000) + 30_000)
    // 256 routes: 256 tallies pending once the run is tallied, which reaches maxBatch.
    const a = manual(newKit(), { maxBatch: 256 })
    await a.stats()
    for (let i = 0; i < 255; i++) a.request({ route: `/r/${i}`, method: 'GET', status: 200, durationMs: 1 })
    await new Promise((r) => setTimeout(r, 50))
    expect(a.writer.flushes).toBe(0)
    a.request({ route: '/r/255', method: 'GET', status: 200, durationMs: 1 })
    const stats = await until(
      () => a.stats(),
      (s) => s.totals.requests === 256,
    )
    expect(stats.totals.requests).toBe(256)
    expect(stats.writer).toMatchObject({ flushes: 1, pending: 0, dropped: 0 })
  })

  it('writes at once when batching is off', async () => {
    const a = newKit().analytics.configure({ batch: false, flushInterval: '1h' })
    a.count('unbatched', 2)
    const stats = await until(
      () => a.stats(),
      (s) => s.totals.unbatched === 2,
      2000,
    )
    expect(stats.totals.unbatched).toBe(2)
  })
})

describe('bad input is capped', () => {
  it('accepts only allow-listed and built-in names when an allow list is set', async () => {
    const a = manual(newKit(), { allowMetrics: ['checkout'] })
    a.count('checkout')
    a.count('pageviews')
    a.count('attacker-1')
    a.event('attacker-2', {})
    await a.flush()
    const stats = await a.stats()
    expect(Object.keys(stats.totals).sort()).toEqual(['checkout', 'pageviews'])
    expect(stats.writer.rejected).toBe(2)
  })

  it('stops accepting new names past maxMetrics and refuses malformed ones', async () => {
    const a = manual(newKit(), { maxMetrics: 3 })
    for (let i = 0; i < 100; i++) a.count(`name-${i}`)
    a.count('has space')
    a.count('x'.repeat(65))
    a.count('requests')
    await a.flush()
    const stats = await a.stats()
    expect(Object.keys(stats.totals).sort()).toEqual(['name-0', 'name-1', 'name-2', 'requests'])
    expect(stats.writer.rejected).toBe(99)
  })

  it('caps distinct pages per day, cuts long paths and drops query strings', async () => {
    const kit = newKit()
    const a = manual(kit, { maxPages: 3, maxPathLength: 20 })
    for (let i = 0; i < 50; i++) a.pageView(`/p/${i}?session=${i}`)
    a.pageView(`/p/0/${'x'.repeat(100)}`)
    await a.flush()
    const top = await a.topPages({ limit: 10 })
    expect(top).toEqual([
      { path: '(other)', count: 48 },
      { path: '/p/0', count: 1 },
      { path: '/p/1', count: 1 },
      { path: '/p/2', count: 1 },
    ])
  })

  it('trims the day ranking in Redis, so many instances cannot grow it past maxPages (+ other)', async () => {
    const prefix = uniquePrefix('analytics-trim')
    const one = createRedkit({ redis: redis.url, prefix, configFile: false, env: {} })
    const two = createRedkit({ redis: redis.url, prefix, configFile: false, env: {} })
    kits.push(one, two)
    const a = manual(one, { maxPages: 5 })
    const b = manual(two, { maxPages: 5 })
    for (let i = 0; i < 5; i++) a.pageView(`/a${i}`)
    for (let i = 0; i < 5; i++) for (let j = 0; j <= i; j++) b.pageView(`/b${i}`)
    await a.flush()
    await b.flush()
    const keys = await raw.keys(`${prefix}:analytics:{pages}:top:*`)
    expect(keys).toHaveLength(1)
    expect(await raw.zcard(keys[0] as string)).toBe(6)
    expect((await a.topPages({ limit: 1 }))[0]).toEqual({ path: '/b4', count: 5 })
  })

  it('replaces oversized or unserialisable metadata', async () => {
    const a = manual(newKit(), { maxMetadataBytes: 64 })
    a.event('upload', { name: 'ok' })
    a.event('upload', { blob: 'x'.repeat(10_000) })
    const circular: Record<string, unknown> = {}
    circular.self = circular
    a.event('upload', circular)
    await a.flush()
    const events = await a.recentEvents('upload')
    expect(events.map((e) => e.metadata)).toEqual([
      { unserializable: true },
      { truncated: true, bytes: expect.any(Number) },
      { name: 'ok' },
    ])
  })

  it('rejects invalid options at creation with ConfigError', () => {
    const kit = newKit()
    expect(() => kit.analytics.configure({ flushInterval: 'soon' })).toThrow(ConfigError)
    expect(() => kit.analytics.configure({ maxBatch: 0 })).toThrow(/analytics.maxBatch/)
    expect(() => kit.analytics.configure({ retention: { minute: 10 } })).toThrow(/retention.minute/)
    expect(() => kit.analytics.configure({ allowMetrics: 'x' as unknown as string[] })).toThrow(ConfigError)
  })
})

describe('events of the other modules', () => {
  it('counts cache hits and misses, rate-limit rejections and lock waits', async () => {
    const kit = newKit()
    const a = manual(kit)
    const emit = kit.events.emit.bind(kit.events) as (event: string, payload: unknown) => void
    for (let i = 0; i < 3; i++) emit('cache:hit', { cache: 'response', key: 'k', layer: 'l1' })
    emit('cache:miss', { cache: 'response', key: 'k' })
    emit('ratelimit:blocked', { policy: 'api', retryAfterMs: 100 })
    emit('lock:wait', { resource: 'r', waitedMs: 42 })
    await a.flush()
    const { totals } = await a.stats()
    expect(totals).toMatchObject({
      'cache.hit': 3,
      'cache.miss': 1,
      'ratelimit.blocked': 1,
      'lock.wait': 1,
      'lock.wait.ms': 42,
    })
  })
})
