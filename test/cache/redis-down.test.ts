import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ConnectionError, createRedkit, type Redkit } from '../../src/index.js'
import { type StandaloneRedis, startRedis, uniquePrefix } from '../helpers/index.js'

let redis: StandaloneRedis
let kit: Redkit

beforeAll(async () => {
  redis = await startRedis()
  kit = createRedkit({ redis: redis.url, prefix: uniquePrefix('cache-down'), configFile: false, env: {} })
  await kit.cache.set('warm', 'in-memory', { ttl: '1m' })
  await kit.cache.set('graced', 'stale-in-memory', { ttl: 50, grace: '1m' })
  await kit.cache.set('expired', 'old', { ttl: 50, staleIfError: '1m' })
  await new Promise((r) => setTimeout(r, 100))
})

afterAll(async () => {
  await kit?.close()
  await redis?.stop()
})

describe('cache engine with Redis killed', () => {
  it('fails open: getOrSet runs the factory within the command timeout and says so in an event', async () => {
    const noL1 = kit.cache.namespace('down', { l1: false })
    await noL1.set('k', 'cached')
    await redis.server.kill()
    const bypass: string[] = []
    kit.on('cache:bypass', (e) => bypass.push(e.reason))
    let calls = 0
    for (let i = 0; i < 3; i++) {
      const started = Date.now()
      const value = await noL1.getOrSet('k', async () => {
        calls++
        return 'from-origin'
      })
      expect(value).toBe('from-origin')
      expect(Date.now() - started).toBeLessThan(3000)
    }
    expect(calls).toBe(3)
    expect(bypass).toContain('redis-unavailable')
  })

  it('get gives undefined, set gives false, readEntry and invalidateTags reject with ConnectionError', async () => {
    const noL1 = kit.cache.namespace('down', { l1: false })
    expect(await noL1.get('k')).toBeUndefined()
    expect(await noL1.set('k', 'v')).toBe(false)
    await expect(noL1.readEntry('k')).rejects.toBeInstanceOf(ConnectionError)
    await expect(noL1.writeEntry('k', Buffer.from('x'), { freshMs: 1000 })).rejects.toBeInstanceOf(
      ConnectionError,
    )
    await expect(kit.cache.invalidateTags(['t'])).rejects.toBeInstanceOf(ConnectionError)
  })

  it('serves a stale memory copy within grace, or runs the factory, within one command timeout', async () => {
    const started = Date.now()
    let calls = 0
    const factory = async () => {
      calls++
      return 'origin'
    }
    expect(await kit.cache.getOrSet('graced', factory, { grace: '1m' })).toBe('stale-in-memory')
    expect(await kit.cache.getOrSet('expired', factory)).toBe('origin')
    expect(calls).toBe(1)
    expect(Date.now() - started).toBeLessThan(2500)
  })

  it('still serves what the memory tier holds', async () => {
    expect(await kit.cache.get('warm')).toBe('in-memory')
  })

  it('works again once Redis is back', async () => {
    await redis.server.start()
    const deadline = Date.now() + 15_000
    let stored = false
    while (!stored && Date.now() < deadline) {
      stored = await kit.cache.set('back', 'yes')
      if (!stored) await new Promise((r) => setTimeout(r, 200))
    }
    expect(stored).toBe(true)
    expect(await kit.cache.namespace('down', { l1: false }).getOrSet('fresh', async () => 'stored')).toBe(
      'stored',
    )
    expect(await kit.redis.exists(kit.cache.namespace('down').redisKey('fresh'))).toBe(1)
  })
})
