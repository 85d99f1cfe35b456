import { execFileSync } from 'node:child_process'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { CodecError, ConfigError, createRedkit, type Redkit } from '../../src/index.js'
import { type StandaloneRedis, startRedis, uniquePrefix } from '../helpers/index.js'

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
let redis: StandaloneRedis
let kitA: Redkit
let kitB: Redkit

beforeAll(async () => {
  redis = await startRedis()
  const prefix = uniquePrefix('cached')
  kitA = createRedkit({ redis: redis.url, prefix, configFile: false, env: {} })
  kitB = createRedkit({ redis: redis.url, prefix, configFile: false, env: {} })
  kitA.cache
  kitB.cache
  await sleep(200)
})

afterAll(async () => {
  await kitA?.close()
  await kitB?.close()
  await redis?.stop()
})

describe('kit.cached()', () => {
  it('memoizes by arguments, keeping their types apart', async () => {
    const calls: unknown[] = []
    const lookup = kitA.cached(
      async function lookup(id: number | string) {
        calls.push(id)
        return { id, at: new Date(0) }
      },
      { ttl: '1m' },
    )
    expect(await lookup(1)).toEqual({ id: 1, at: new Date(0) })
    expect(await lookup(1)).toEqual({ id: 1, at: new Date(0) })
    expect(await lookup('1')).toEqual({ id: '1', at: new Date(0) })
    expect(calls).toEqual([1, '1'])
    expect(lookup.keyFor(1)).not.toBe(lookup.keyFor('1'))
  })

  it('runs once across two instances for concurrent calls', async () => {
    let calls = 0
    const slow = async function slowReport(day: string) {
      calls++
      await sleep(100)
      return `report ${day}`
    }
    const onA = kitA.cached(slow, { ttl: '1m' })
    const onB = kitB.cached(slow, { ttl: '1m' })
    const results = await Promise.all(Array.from({ length: 40 }, (_, i) => (i % 2 ? onA : onB)('mon')))
    expect(new Set(results)).toEqual(new Set(['report mon']))
    expect(calls).toBe(1)
  })

  it('serves stale within grace and refreshes in the background', async () => {
    let version = 0
    const getVersion = kitA.cached(
      async function getVersion() {
        version++
        return version
      },
      { ttl: 80, grace: '1m' },
    )
    expect(await getVersion()).toBe(1)
    await sleep(120)
    expect(await getVersion()).toBe(1)
    await sleep(50)
    expect(await getVersion()).toBe(2)
  })

  it('invalidates by arguments and by tags from arguments', async () => {
    let calls = 0
    const user = kitA.cached(
      async function user(id: string) {
        calls++
        return { id, calls }
      },
      { ttl: '1m', tags: (id) => [`user:${id}`] },
    )
    await user('a')
    await user.invalidate('a')
    expect((await user('a')).calls).toBe(2)
    await kitB.cache.invalidateTags(['user:a'])
    await sleep(50)
    expect((await user('a')).calls).toBe(3)
  })

  it('needs a name for anonymous functions, and rejects arguments it cannot encode', async () => {
    expect(() => kitA.cached(async () => 1)).toThrow(ConfigError)
    const f = kitA.cached(async (cb: () => void) => typeof cb, { name: 'cb' })
    await expect(f(() => undefined)).rejects.toBeInstanceOf(CodecError)
  })
})

describe('@cachedMethod', () => {
  it('memoizes a method with the kit given explicitly, keyed by class, method and arguments', () => {
    const out = execFileSync(
      process.execPath,
      ['--import', 'tsx', 'test/cache/fixtures/decorated-service.ts'],
      {
        env: { ...process.env, REDIS_URL: redis.url, PREFIX: uniquePrefix('decorated') },
        encoding: 'utf8',
        timeout: 30_000,
      },
    )
    const result = JSON.parse(out.trim().split('\n').pop() as string)
    expect(result.first).toEqual({ day: 'mon', total: '100000000000000000000', bigint: true })
    expect(result.same).toBe(true)
    // Another instance (on another kit) shares the entry: same class, method and arguments.
    expect(result.otherDay).toBe('mon')
    expect(result.otherCalls).toBe(0)
    // daily: once, again after the tag invalidation; weekly (own key function): once.
    expect(result.calls).toBe(3)
  })
})
