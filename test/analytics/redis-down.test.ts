import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createRedkit, type Redkit } from '../../src/index.js'
import { type StandaloneRedis, startRedis, uniquePrefix } from '../helpers/index.js'

let redis: StandaloneRedis
let kit: Redkit

beforeAll(async () => {
  redis = await startRedis(['--enable-debug-command', 'yes'])
  kit = createRedkit({ redis: redis.url, prefix: uniquePrefix('analytics-down'), configFile: false, env: {} })
})
afterAll(async () => {
  await kit.close()
  await redis.stop()
})

async function until(check: () => Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    try {
      if (await check()) return true
    } catch {
      // not back yet
    }
    await new Promise((r) => setTimeout(r, 50))
  }
  return false
}

describe('Redis slow but connected', () => {
  it('does not send a timed-out batch again, so nothing is counted twice', async () => {
    const a = kit.analytics.configure({ flushInterval: '1h', maxBatch: 100_000 })
    const raw = new Redis(redis.url)
    try {
      // Redis stalls longer than the command timeout (1 s) while the connection stays up.
      const sleeping = raw.call('DEBUG', 'SLEEP', '1.5')
      await new Promise((r) => setTimeout(r, 50))
      a.count('slow.metric', 5)
      const result = await a.flush()
      expect(result.ok).toBe(false)
      expect(a.writer.uncertainFlushes).toBe(1)
      expect(a.writer.pending).toBe(0)
      await sleeping
      expect((await a.flush()).commands).toBe(0)
      expect((await a.stats()).totals['slow.metric']).toBe(5)
    } finally {
      raw.disconnect()
    }
  })
})

describe('Redis killed and restarted', () => {
  it('keeps counts in memory while Redis is down and flushes them when it returns', async () => {
    // A long interval: what brings the counts back is the kit's reconnect ('ready'), not a timer.
    const a = kit.analytics.configure({ flushInterval: '1h', maxBatch: 100_000, maxPending: 5000 })
    a.count('before', 1)
    a.pageView('/warm', { visitorId: 'w' })
    await a.flush()
    expect((await a.stats()).totals.before).toBe(1)

    await redis.server.kill()
    const started = performance.now()
    for (let i = 0; i < 1000; i++) a.count('while.down')
    for (let i = 0; i < 20; i++) a.pageView('/down', { visitorId: `v${i}` })
    a.event('signup', { plan: 'pro' })
    // Recording is synchronous and does not wait for Redis.
    expect(performance.now() - started).toBeLessThan(1000)
    const flushed = await a.flush()
    expect(flushed.ok).toBe(false)
    expect(performance.now() - started).toBeLessThan(3000)
    expect(a.writer.pending).toBeGreaterThan(0)
    expect(a.writer.failedFlushes).toBeGreaterThan(0)

    // Several failing flushes must not lose or double anything.
    for (let i = 0; i < 3; i++) expect((await a.flush()).ok).toBe(false)
    await redis.server.start()
    const back = await until(async () => (await a.stats()).totals['while.down'] === 1000, 10_000)
    expect(back).toBe(true)
    const stats = await a.stats()
    expect(stats.totals).toMatchObject({ 'while.down': 1000, pageviews: 20, signup: 1 })
    expect(stats.writer.pending).toBe(0)
    expect(await a.topPages()).toEqual([{ path: '/down', count: 20 }])
    expect(await a.uniques('pageviews')).toBe(20)
    expect((await a.recentEvents('signup')).map((e) => e.metadata)).toEqual([{ plan: 'pro' }])
    // The restarted server kept nothing: buckets written before the kill were created again,
    // and each got its expiry again, though it had been sent before (failed flushes re-send them).
    const raw = new Redis(redis.url)
    try {
      const buckets = await raw.keys(`${kit.prefix}:analytics:s:*`)
      expect(buckets.some((k) => k.includes(':pageviews:'))).toBe(true)
      for (const key of buckets) expect(await raw.pttl(key)).toBeGreaterThan(0)
    } finally {
      raw.disconnect()
    }
  })

  it('does not retry a failed batch on every recording while the backlog stays above maxBatch', async () => {
    const a = kit.analytics.configure({ flushInterval: '1h', maxBatch: 10, maxPending: 5000 })
    const failedAtStart = a.writer.failedFlushes
    await redis.server.kill()
    await until(async () => kit.redis.status !== 'ready', 5000)
    // A backlog above maxBatch that cannot be written...
    for (let i = 0; i < 20; i++) a.count(`backlog.${i}`)
    await until(async () => a.writer.failedFlushes > failedAtStart, 5000)
    const failedBefore = a.writer.failedFlushes
    // ...is not sent again for each recording that follows (each retry rebuilds the whole batch):
    // 2 s of recordings every 10 ms while the kit keeps reconnecting.
    for (let round = 0; round < 200; round++) {
      for (let i = 0; i < 5; i++) a.count(`backlog.${i}`)
      await new Promise((r) => setTimeout(r, 10))
    }
    await a.flush()
    // Only the explicit flush above tried again (the interval is an hour here).
    expect(a.writer.failedFlushes - failedBefore).toBe(1)
    expect(a.writer.pending).toBeGreaterThanOrEqual(20)
    await redis.server.start()
    // The kit's reconnect sends the backlog, and early flushes work again afterwards.
    const back = await until(async () => a.writer.pending === 0, 10_000)
    expect(back).toBe(true)
    expect((await a.stats()).totals['backlog.0']).toBe(201)
    for (let i = 0; i < 10; i++) a.count(`after.${i}`)
    expect(await until(async () => (await a.stats()).totals['after.9'] === 1, 5000)).toBe(true)
  })

  it('drops past maxPending while down and counts what it dropped', async () => {
    const a = kit.analytics.configure({ flushInterval: 100, maxPending: 50 })
    await redis.server.kill()
    const dropped: number[] = []
    const off = kit.on('analytics:dropped', ({ count }) => dropped.push(count))
    for (let i = 0; i < 200; i++) a.pageView('/flood', { visitorId: `f${i}` })
    await a.flush()
    expect(a.writer.pending).toBeLessThanOrEqual(50)
    expect(a.writer.dropped).toBeGreaterThan(0)
    expect(dropped.length).toBeGreaterThan(0)
    off()
    await redis.server.start()
    {
      const back = await until(
        async () => a.writer.pending === 0 && ((await a.stats()).totals.pageviews ?? 0) > 0,
        10_000,
      )
      expect(back).toBe(true)
      // What was kept is written once; nothing kept is lost.
      const kept = (await a.stats()).totals.pageviews ?? 0
      expect(kept).toBeGreaterThan(0)
      expect(kept).toBeLessThan(200)
    }
  })
})
