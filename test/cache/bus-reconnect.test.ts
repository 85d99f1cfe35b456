import type { Redis } from 'ioredis'
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest'
import { createRedkit, type Redkit } from '../../src/index.js'
import { type StandaloneRedis, startRedis, uniquePrefix } from '../helpers/index.js'

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

let redis: StandaloneRedis
let kitA: Redkit
let kitB: Redkit
const prefix = uniquePrefix('cache-reconnect')

/** Waits until `check` holds (bus messages and undos are asynchronous). */
async function eventually(check: () => boolean | Promise<boolean>, ms = 3000): Promise<void> {
  const deadline = Date.now() + ms
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('condition not met in time')
    await sleep(20)
  }
}

/**
 * Drops kit A's subscriber connection (the server closes it, as in a failover) and resolves once
 * it is subscribed again; `onClose` runs as the drop is noticed, before the reconnect.
 */
async function dropSubscriber(onClose: () => void = () => undefined): Promise<void> {
  const subscriber = kitA.hub.dedicated('subscriber') as Redis
  const port = subscriber.stream.localPort
  subscriber.once('close', onClose)
  // Registered after the bus's own listener: runs once the bus has handled the reconnect.
  const ready = new Promise<void>((resolve) => subscriber.once('ready', () => resolve()))
  await kitB.redis.client('KILL', 'ADDR', `127.0.0.1:${port}`)
  await ready
}

const exists = (key: string) => kitB.redis.exists(kitA.cache.namespace('reconnect').redisKey(key))

beforeAll(async () => {
  redis = await startRedis()
  kitA = createRedkit({ redis: redis.url, prefix, configFile: false, env: {} })
  kitB = createRedkit({ redis: redis.url, prefix, configFile: false, env: {} })
  kitA.cache
  kitB.cache
  await sleep(200)
})

afterEach(() => {
  vi.useRealTimers()
})

afterAll(async () => {
  await kitA?.close()
  await kitB?.close()
  await redis?.stop()
})

describe('cache engine: marked writes when the bus reconnects', () => {
  it('writes made well before the subscriber dropped survive its reconnect; writes around it are undone', async () => {
    const cache = kitA.cache.namespace('reconnect')
    vi.useFakeTimers({ toFake: ['Date'] })
    const body = Buffer.from('old')
    const since = () => cache.invalidationMark()
    expect(await cache.writeEntry('well-before', body, { freshMs: 600_000, since: since() })).toBe(true)
    // Twenty seconds on: news about that write would have arrived long before the outage.
    vi.setSystemTime(Date.now() + 20_000)
    expect(await cache.writeEntry('just-before', body, { freshMs: 600_000, since: since() })).toBe(true)
    let during: Promise<boolean> | undefined
    await dropSubscriber(() => {
      during = cache.writeEntry('during', body, { freshMs: 600_000, since: since() })
    })
    // Whether it landed before the reconnect (then undone with the others) or after (then its
    // mark, older than the reconnect, is refused), it does not stay.
    await during
    await eventually(async () => (await exists('just-before')) === 0 && (await exists('during')) === 0)
    expect(await exists('well-before')).toBe(1)
    expect((await cache.readEntry('well-before'))?.value.toString()).toBe('old')
  })

  it('undoes many writes in messages of at most 500 keys', async () => {
    const cache = kitA.cache.namespace('reconnect-many')
    const channel = kitA.keys.module('cache').key('#bus')
    const sizes: number[] = []
    const undone = new Set<string>()
    const unsubscribe = await kitB.hub.subscribe(channel, (raw) => {
      const message = JSON.parse(raw) as { t: string; k?: string[] }
      if (message.t !== 'keys' || !message.k || message.k.length < 2) return
      sizes.push(message.k.length)
      for (const key of message.k) undone.add(key)
    })
    try {
      const keys = Array.from({ length: 1200 }, (_, i) => cache.redisKey(`many-${i}`))
      const since = cache.invalidationMark()
      const written = await Promise.all(
        Array.from({ length: 1200 }, (_, i) =>
          cache.writeEntry(`many-${i}`, Buffer.from('old'), { freshMs: 600_000, since }),
        ),
      )
      expect(written.every(Boolean)).toBe(true)
      await dropSubscriber()
      await eventually(() => keys.every((key) => undone.has(key)))
      expect(Math.max(...sizes)).toBeLessThanOrEqual(500)
      expect(await kitB.redis.exists(...keys)).toBe(0)
    } finally {
      await unsubscribe()
    }
  })
})
