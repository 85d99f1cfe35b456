import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import { createRedkit, type Redkit } from '../../src/index.js'
import { type RedisClusterGroup, startCluster, uniquePrefix } from '../helpers/index.js'

let cluster: RedisClusterGroup
let kit: Redkit

beforeAll(async () => {
  cluster = await startCluster()
  kit = createRedkit({
    redis: { cluster: cluster.addresses },
    prefix: uniquePrefix('analytics-cluster'),
    configFile: false,
    env: {},
  })
  kit.analytics.configure({ flushInterval: '1h', maxBatch: 1_000_000 })
})
afterAll(async () => {
  vi.useRealTimers()
  await kit.close()
  await cluster.stop()
})

describe('analytics on Redis Cluster', () => {
  it('flushes across slots and merges days for uniques and top pages (one hash tag per metric)', async () => {
    const a = kit.analytics
    const now = Date.now()
    const yesterday = now - 86_400_000
    vi.useFakeTimers({ toFake: ['Date'] })
    try {
      vi.setSystemTime(yesterday)
      for (let i = 0; i < 100; i++) a.pageView('/a', { visitorId: `v${i}` })
      a.event('signup', { day: 1 })
      vi.setSystemTime(now)
      for (let i = 50; i < 150; i++) a.pageView('/b', { visitorId: `v${i}` })
      a.count('orders', 3)
      a.event('signup', { day: 2 })
      a.request({ route: '/x/:id', method: 'GET', status: 200, durationMs: 3, fingerprint: 'fp-1' })
    } finally {
      vi.useRealTimers()
    }
    const result = await a.flush()
    expect(result.ok).toBe(true)
    const range = { from: yesterday, to: now }
    expect(Math.abs((await a.uniques('pageviews', range)) - 151)).toBeLessThan(6)
    expect(await a.topPages({ ...range, limit: 2 })).toEqual([
      { path: '/a', count: 100 },
      { path: '/b', count: 100 },
    ])
    expect((await a.series('orders')).at(-1)?.value).toBe(3)
    expect((await a.recentEvents('signup')).map((e) => e.metadata)).toEqual([{ day: 2 }, { day: 1 }])
    const stats = await a.stats()
    expect(stats.totals).toMatchObject({ pageviews: 201, orders: 3, signup: 2, requests: 1 })
  })
})
