import type { Cluster } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createRedkit, type Redkit } from '../../src/index.js'
import { type RedisClusterGroup, startCluster, uniquePrefix } from '../helpers/index.js'

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
let cluster: RedisClusterGroup
let kitA: Redkit
let kitB: Redkit

beforeAll(async () => {
  cluster = await startCluster()
  const prefix = uniquePrefix('cache-cluster')
  kitA = createRedkit({ redis: { cluster: cluster.addresses }, prefix, configFile: false, env: {} })
  kitB = createRedkit({ redis: { cluster: cluster.addresses }, prefix, configFile: false, env: {} })
  kitA.cache
  kitB.cache
  await sleep(500)
})

afterAll(async () => {
  await kitA?.close()
  await kitB?.close()
  await cluster?.stop()
})

async function eventually(check: () => Promise<boolean>, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('condition not met in time')
    await sleep(25)
  }
}

describe('cache engine on Redis Cluster', () => {
  it('invalidates a tag carried by entries spread over every master', async () => {
    const keys = Array.from({ length: 60 }, (_, i) => `product:${i}`)
    for (const key of keys) await kitA.cache.set(key, { key }, { ttl: '1m', tags: ['catalog'] })
    await kitA.cache.set('untagged', 1, { ttl: '1m' })
    // Entries live on every master.
    const masters = new Set(
      keys.map((k) => kitA.cache.redisKey(k)).map((k) => (kitA.redis as Cluster).slots[slot(k)]?.[0]),
    )
    expect(masters.size).toBeGreaterThan(1)
    for (const key of keys) expect(await kitB.cache.get(key)).toEqual({ key })
    await kitB.cache.invalidateTags(['catalog'])
    for (const key of keys) expect(await kitB.cache.get(key)).toBeUndefined()
    await eventually(async () => (await kitA.cache.get('product:7')) === undefined)
    for (const key of keys) expect(await kitA.cache.get(key)).toBeUndefined()
    expect(await kitA.cache.get('untagged')).toBe(1)
  })

  it('runs the factory once for 2 kits × 50 concurrent calls', async () => {
    let calls = 0
    const results = await Promise.all(
      Array.from({ length: 100 }, (_, i) =>
        (i % 2 ? kitA : kitB).cache.getOrSet('cold', async () => {
          calls++
          await sleep(100)
          return 'v'
        }),
      ),
    )
    expect(results.every((r) => r === 'v')).toBe(true)
    expect(calls).toBe(1)
  })

  it('invalidates query results by table tag across instances', async () => {
    let executions = 0
    const execute = async () => ++executions
    for (let id = 0; id < 30; id++) {
      await kitA.queries.getOrExecute('SELECT * FROM orders WHERE id = $1', [id], execute, {
        tags: ['orders'],
      })
    }
    await kitB.queries.getOrExecute('SELECT * FROM orders WHERE id = $1', [3], execute, { tags: ['orders'] })
    expect(executions).toBe(30)
    await kitB.queries.invalidateTags(['orders'])
    await eventually(async () => {
      const before = executions
      await kitA.queries.getOrExecute('SELECT * FROM orders WHERE id = $1', [3], execute, {
        tags: ['orders'],
      })
      return executions > before
    })
    await kitB.queries.getOrExecute('SELECT * FROM orders WHERE id = $1', [4], execute, { tags: ['orders'] })
    expect(executions).toBe(32)
  })

  it('clear() scans every master', async () => {
    const ns = kitA.cache.namespace('wipe')
    for (let i = 0; i < 40; i++) await ns.set(`k${i}`, i)
    expect(await ns.clear()).toBe(40)
    expect(await kitB.cache.namespace('wipe').get('k3')).toBeUndefined()
  })
})

// CRC16 (XMODEM) key slot, as Redis Cluster computes it.
function slot(key: string): number {
  const open = key.indexOf('{')
  if (open !== -1) {
    const close = key.indexOf('}', open + 1)
    if (close > open + 1) key = key.slice(open + 1, close)
  }
  let crc = 0
  for (const byte of Buffer.from(key)) {
    crc ^= byte << 8
    for (let i = 0; i < 8; i++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff
  }
  return crc % 16384
}
