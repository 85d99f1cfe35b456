import { Redis } from 'ioredis'
import { RateLimiterRedis, RateLimiterUnion } from 'rate-limiter-flexible'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  ConfigError,
  createRedkit,
  type OutboundQueue,
  RateLimitQueueError,
  type Redkit,
} from '../../src/index.js'
import { type StandaloneRedis, startRedis, uniquePrefix } from '../helpers/index.js'
import { listenForResets } from './listening.js'
import { deleteAndPublishOrder } from './sent.js'

let redis: StandaloneRedis
const kits: Redkit[] = []
const prefix = uniquePrefix('ratelimit')

function kit(on = prefix): Redkit {
  const k = createRedkit({ redis: redis.url, prefix: on, commandTimeout: 5000, configFile: false, env: {} })
  kits.push(k)
  return k
}

beforeAll(async () => {
  redis = await startRedis()
})

afterAll(async () => {
  await Promise.all(kits.map((k) => k.close()))
  await redis?.stop()
})

describe('kit.rateLimits on a standalone server', () => {
  it('allows exactly 100 of 1000 concurrent consumes from three kits at a 100-point limit', async () => {
    const three = [kit(), kit(), kit()]
    const options = { name: 'conc', limits: [{ points: 100, duration: '1m' }] }
    const results = await Promise.all(
      Array.from({ length: 1000 }, (_, i) => three[i % 3]!.rateLimits.consume('shared', options)),
    )
    expect(results.filter((r) => r.allowed)).toHaveLength(100)
    expect(results.every((r) => r.source === 'redis')).toBe(true)
    const state = await three[0]!.rateLimits.get('shared', options)
    expect(state.limits[0]).toMatchObject({ limit: 100, remaining: 0 })
    expect(state.allowed).toBe(false)
  })

  it('rejects a request from every limit when one is full and leaves the other count untouched', async () => {
    const k = kit()
    const options = {
      name: 'two',
      limits: [
        { name: 'second', points: 3, duration: '1m' },
        { name: 'day', points: 1000, duration: '1d' },
      ],
    }
    for (let i = 0; i < 3; i++) expect((await k.rateLimits.consume('u1', options)).allowed).toBe(true)
    const rejected = await k.rateLimits.consume('u1', options)
    expect(rejected.allowed).toBe(false)
    expect(rejected.violated).toEqual(['second'])
    expect(rejected.retryAfterMs).toBeGreaterThan(0)
    expect(rejected.retryAfterMs).toBeLessThanOrEqual(60_000)
    const keys = k.keys.module('ratelimit')
    const base = keys.tagged('two/u1')
    expect(await k.redis.get(`${base}:day`)).toBe('3')
    expect(await k.redis.get(`${base}:second`)).toBe('3')
    const more = await Promise.all(Array.from({ length: 20 }, () => k.rateLimits.consume('u1', options)))
    expect(more.every((r) => !r.allowed)).toBe(true)
    expect(await k.redis.get(`${base}:day`)).toBe('3')
    expect(rejected.limits).toEqual([
      { name: 'second', limit: 3, remaining: 0, resetMs: expect.any(Number) },
      { name: 'day', limit: 1000, remaining: 997, resetMs: expect.any(Number) },
    ])
  })

  it("does better than rate-limiter-flexible's RateLimiterUnion, which spends points in the other limits", async () => {
    const client = new Redis(redis.url)
    try {
      const second = new RateLimiterRedis({
        storeClient: client,
        keyPrefix: `${prefix}:u-second`,
        points: 3,
        duration: 60,
      })
      const day = new RateLimiterRedis({
        storeClient: client,
        keyPrefix: `${prefix}:u-day`,
        points: 1000,
        duration: 86400,
      })
      const union = new RateLimiterUnion(second, day)
      for (let i = 0; i < 3; i++) await union.consume('u1')
      await expect(union.consume('u1')).rejects.toBeDefined()
      // The rejected request was still charged to the daily limit.
      expect((await day.get('u1'))?.consumedPoints).toBe(4)
      const k = kit()
      const options = {
        name: 'union',
        limits: [
          { name: 'second', points: 3, duration: '1m' },
          { name: 'day', points: 1000, duration: '1d' },
        ],
      }
      for (let i = 0; i < 3; i++) await k.rateLimits.consume('u1', options)
      expect((await k.rateLimits.consume('u1', options)).allowed).toBe(false)
      expect((await k.rateLimits.get('u1', options)).limits[1]?.remaining).toBe(997)
    } finally {
      await client.quit()
    }
  })

  it('reports remaining points and window, with a TTL on every counter', async () => {
    const k = kit()
    const options = { name: 'ttl', limits: [{ name: 'm', points: 10, duration: '1m' }] }
    const r = await k.rateLimits.consume('a', { ...options, cost: 4 })
    expect(r).toMatchObject({ allowed: true, retryAfterMs: 0, violated: [], blocked: false })
    expect(r.limits[0]).toMatchObject({ name: 'm', limit: 10, remaining: 6 })
    expect(r.limits[0]!.resetMs).toBeGreaterThan(55_000)
    const ttl = await k.redis.pttl(`${k.keys.module('ratelimit').tagged('ttl/a')}:m`)
    expect(ttl).toBeGreaterThan(55_000)
    expect((await k.rateLimits.consume('a', { ...options, cost: 7 })).allowed).toBe(false)
    expect((await k.rateLimits.consume('a', { ...options, cost: 6 })).allowed).toBe(true)
  })

  it('keeps keys with separators and braces apart, in one hash tag per policy and key', async () => {
    const k = kit()
    const options = { name: 'inj', limits: [{ points: 1, duration: '1m' }] }
    const tricky = ['a:b', 'a', 'b', '{a}', 'a}:{b', '%3A', ':', '', 'a/b', 'x'.repeat(5000)]
    const results = await Promise.all(tricky.map((key) => k.rateLimits.consume(key, options)))
    expect(results.every((r) => r.allowed)).toBe(true)
    const keys = await k.redis.keys(`${prefix}:ratelimit:{inj/*`)
    expect(keys).toHaveLength(tricky.length)
    for (const key of keys) {
      // exactly one opening and one closing brace: user input never adds or closes a tag
      expect(key.split('{')).toHaveLength(2)
      expect(key.split('}')).toHaveLength(2)
      expect(key.length).toBeLessThan(300)
    }
  })

  it('rejects a bad programmatic cost with ConfigError and never consumes', async () => {
    const k = kit()
    const options = { name: 'cost', limits: [{ points: 5, duration: '1m' }] }
    for (const cost of [0, -1, Number.NaN, 1.5]) {
      expect(() => k.rateLimits.consume('c', { ...options, cost })).toThrow(ConfigError)
    }
    expect((await k.rateLimits.get('c', options)).limits[0]?.remaining).toBe(5)
  })

  it('rejects a cost larger than a limit every time', async () => {
    const k = kit()
    const options = { name: 'big', limits: [{ points: 5, duration: '1m' }] }
    const r = await k.rateLimits.consume('c', { ...options, cost: 6 })
    expect(r.allowed).toBe(false)
    expect(r.violated).toHaveLength(1)
  })

  it('blocks a key after it exceeds a limit and then rejects it from memory without a Redis call', async () => {
    const k = kit()
    const other = kit()
    const options = { name: 'blk', limits: [{ points: 2, duration: '1m' }], blockDuration: '30s' }
    await k.rateLimits.consume('b', options)
    await k.rateLimits.consume('b', options)
    const over = await k.rateLimits.consume('b', options)
    expect(over.allowed).toBe(false)
    expect(over.retryAfterMs).toBeGreaterThanOrEqual(30_000)
    let commands = 0
    k.on('command', () => commands++)
    const again = await k.rateLimits.consume('b', options)
    expect(again).toMatchObject({ allowed: false, blocked: true, source: 'block-cache' })
    expect(commands).toBe(0)
    // Another instance learns the block from Redis once, then also answers from memory.
    const seen = await other.rateLimits.consume('b', options)
    expect(seen).toMatchObject({ allowed: false, blocked: true, source: 'redis' })
    expect(seen.retryAfterMs).toBeGreaterThan(25_000)
    expect((await other.rateLimits.consume('b', options)).source).toBe('block-cache')
  })

  it('blocks, gets and resets a key on demand', async () => {
    const k = kit()
    const options = { name: 'ops', limits: [{ points: 3, duration: '1m' }] }
    await k.rateLimits.consume('x', options)
    await k.rateLimits.block('x', { ...options, duration: '10s' })
    const blocked = await kit().rateLimits.consume('x', options)
    expect(blocked).toMatchObject({ allowed: false, blocked: true })
    expect(blocked.retryAfterMs).toBeGreaterThan(9000)
    const state = await k.rateLimits.get('x', options)
    expect(state.blocked).toBe(true)
    await k.rateLimits.reset('x', options)
    const fresh = await k.rateLimits.consume('x', options)
    expect(fresh.allowed).toBe(true)
    expect(fresh.limits[0]?.remaining).toBe(2)
    await k.rateLimits.refund('x', options)
    expect((await k.rateLimits.get('x', options)).limits[0]?.remaining).toBe(3)
  })

  it('resets a block this instance remembers, whatever blockDuration or duration spelling reset is given', async () => {
    const k = kit(uniquePrefix('ratelimit-reset'))
    await listenForResets(k)
    const limits = [{ points: 1, duration: '1m' }]
    const options = { name: 'reset-here', limits, blockDuration: '10m' }
    const spellings = [
      { name: 'reset-here', limits },
      { name: 'reset-here', limits: [{ points: 1, duration: 60_000 }], blockDuration: 600_000 },
    ]
    for (const [i, spelling] of spellings.entries()) {
      await k.rateLimits.consume(i, options)
      expect(await k.rateLimits.consume(i, options)).toMatchObject({ allowed: false, blocked: true })
      expect((await k.rateLimits.consume(i, options)).source).toBe('block-cache')
      await k.rateLimits.reset(i, spelling)
      expect(await k.rateLimits.consume(i, options)).toMatchObject({ allowed: true, source: 'redis' })
    }
  })

  it('resets a block that other instances remember, over pub/sub, within moments', async () => {
    const own = uniquePrefix('ratelimit-reset')
    const a = kit(own)
    const b = kit(own)
    await listenForResets(b)
    const options = {
      name: 'reset-everywhere',
      limits: [{ points: 1, duration: '1m' }],
      blockDuration: '10m',
    }
    await b.rateLimits.consume('k', options)
    expect(await b.rateLimits.consume('k', options)).toMatchObject({ allowed: false, blocked: true })
    expect((await b.rateLimits.consume('k', options)).source).toBe('block-cache')
    await a.rateLimits.reset('k', options)
    const deadline = Date.now() + 1000
    while ((await b.rateLimits.get('k', options)).source === 'block-cache' && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 10))
    expect(await b.rateLimits.consume('k', options)).toMatchObject({ allowed: true, source: 'redis' })
  })

  it("refuses to remember only the reset key's block from a check in flight: other keys' blocks are still remembered", async () => {
    const k = kit()
    const options = { name: 'reset-one-key', limits: [{ points: 1, duration: '1m' }], blockDuration: '10m' }
    // Another instance has 'b' blocked: this one knows it from Redis only.
    const other = kit()
    await other.rateLimits.consume('b', options)
    expect((await other.rateLimits.consume('b', options)).blocked).toBe(true)
    // With the scripts flushed, the check of 'b' needs more round trips (NOSCRIPT, then EVAL) than
    // the reset of 'a' sent with it, which is answered first.
    await k.redis.script('FLUSH')
    const [check] = await Promise.all([k.rateLimits.consume('b', options), k.rateLimits.reset('a', options)])
    expect(check).toMatchObject({ allowed: false, blocked: true, source: 'redis' })
    expect((await k.rateLimits.consume('b', options)).source).toBe('block-cache')
  })

  it('lets a policy of the same name with other limits through a block another one remembers, as Redis does', async () => {
    const k = kit()
    const burst = {
      name: 'two-budgets',
      limits: [{ name: 'burst', points: 1, duration: '1m' }],
      blockDuration: '10m',
    }
    const daily = { name: 'two-budgets', limits: [{ name: 'daily', points: 100, duration: '1d' }] }
    await k.rateLimits.consume('d', burst)
    expect((await k.rateLimits.consume('d', burst)).blocked).toBe(true)
    expect((await k.rateLimits.consume('d', burst)).source).toBe('block-cache')
    expect(await k.rateLimits.consume('d', daily)).toMatchObject({ allowed: true, source: 'redis' })
  })

  it('sends the PUBLISH of a reset with its DEL, before the DEL is answered: one round trip', async () => {
    const k = kit()
    const options = { name: 'reset-trip', limits: [{ points: 1, duration: '1m' }], blockDuration: '1m' }
    await k.rateLimits.consume('t', options)
    expect((await k.rateLimits.consume('t', options)).blocked).toBe(true)
    const order = await deleteAndPublishOrder(k.redis as Redis, () => k.rateLimits.reset('t', options))
    expect(order).toEqual(['DEL sent', 'PUBLISH sent', 'DEL answered'])
    expect(await k.rateLimits.consume('t', options)).toMatchObject({ allowed: true, source: 'redis' })
  })

  it('resets all the same when its PUBLISH is refused, and reports that as an error event', async () => {
    const admin = kit()
    await admin.redis.acl('SETUSER', 'no-publish', 'on', '>secret', '~*', '&*', '+@all', '-publish')
    const url = new URL(redis.url)
    url.username = 'no-publish'
    url.password = 'secret'
    const limited = createRedkit({ redis: url.href, prefix, configFile: false, env: {} })
    kits.push(limited)
    const errors: Array<{ error: Error; connection?: string }> = []
    limited.on('error', (e) => errors.push(e))
    const options = {
      name: 'reset-unpublished',
      limits: [{ points: 1, duration: '1m' }],
      blockDuration: '1m',
    }
    await limited.rateLimits.consume('u', options)
    expect((await limited.rateLimits.consume('u', options)).blocked).toBe(true)
    await limited.rateLimits.reset('u', options)
    expect(errors).toHaveLength(1)
    expect(errors[0]?.error.message).toMatch(/NOPERM/)
    expect(errors[0]?.connection).toBe('ratelimit-bus')
    expect(await limited.rateLimits.consume('u', options)).toMatchObject({ allowed: true, source: 'redis' })
  })

  it('keeps a block by hand until the window it falls in ends, so no fresh window comes early', async () => {
    const options = { name: 'hand-block', limits: [{ points: 3, duration: '1m' }] }
    await kit().rateLimits.consume('y', options)
    await kit().rateLimits.block('y', { ...options, duration: '1s' })
    const blocked = await kit().rateLimits.consume('y', options)
    expect(blocked).toMatchObject({ allowed: false, blocked: true })
    expect(blocked.retryAfterMs).toBeGreaterThan(50_000)
  })

  it('with blockReplacesWindow, blocks for exactly blockDuration and then starts a fresh window', async () => {
    const k = kit()
    const options = {
      name: 'replace-block',
      limits: [{ name: 'hour', points: 2, duration: '1h' }],
      blockDuration: '1s',
      blockReplacesWindow: true,
    }
    await k.rateLimits.consume('r', options)
    await k.rateLimits.consume('r', options)
    const over = await k.rateLimits.consume('r', options)
    expect(over).toMatchObject({ allowed: false, blocked: true, violated: ['hour'] })
    expect(over.retryAfterMs).toBeLessThanOrEqual(1000)
    const seen = await kit().rateLimits.consume('r', options)
    expect(seen).toMatchObject({ allowed: false, blocked: true, source: 'redis' })
    expect(seen.retryAfterMs).toBeLessThanOrEqual(1000)
    await new Promise((r) => setTimeout(r, 1100))
    const fresh = await k.rateLimits.consume('r', options)
    expect(fresh).toMatchObject({ allowed: true, source: 'redis' })
    expect(fresh.limits[0]?.remaining).toBe(1)
    expect(fresh.limits[0]?.resetMs).toBeGreaterThan(3_500_000)
    // A block by hand on such a policy lasts its duration too.
    await k.rateLimits.block('r', { ...options, duration: '1s' })
    const byHand = await kit().rateLimits.consume('r', options)
    expect(byHand).toMatchObject({ allowed: false, blocked: true, source: 'redis' })
    expect(byHand.retryAfterMs).toBeLessThanOrEqual(1000)
  })

  it('emits ratelimit:allowed and ratelimit:blocked with the policy name', async () => {
    const k = kit()
    const allowed: string[] = []
    const blocked: Array<{ policy: string; retryAfterMs: number }> = []
    k.on('ratelimit:allowed', (e) => allowed.push(e.policy))
    k.on('ratelimit:blocked', (e) => blocked.push(e))
    const options = { name: 'ev', limits: [{ points: 1, duration: '1m' }] }
    await k.rateLimits.consume('e', options)
    await k.rateLimits.consume('e', options)
    expect(allowed).toEqual(['ev'])
    expect(blocked).toHaveLength(1)
    expect(blocked[0]?.policy).toBe('ev')
    expect(blocked[0]?.retryAfterMs).toBeGreaterThan(0)
  })

  it('queues outbound calls until the limit has room instead of rejecting them', async () => {
    const k = kit()
    const queue = k.rateLimits.queue({ name: 'outbound', limits: [{ points: 3, duration: '1s' }] })
    const started = Date.now()
    const done: number[] = []
    await Promise.all(
      Array.from({ length: 7 }, (_, i) =>
        queue.run(() => {
          done.push(i)
          return i
        }),
      ),
    )
    expect(done).toEqual([0, 1, 2, 3, 4, 5, 6])
    // 7 calls at 3 per second need at least two window changes.
    expect(Date.now() - started).toBeGreaterThanOrEqual(1500)
  })

  it('refuses queued work that can never fit, overflows the queue, or waits past its deadline', async () => {
    const k = kit()
    const queue = k.rateLimits.queue({
      name: 'tiny',
      limits: [{ points: 2, duration: '2s' }],
      maxQueueSize: 1,
    })
    await expect(queue.take({ cost: 3 })).rejects.toBeInstanceOf(RateLimitQueueError)
    await queue.take({ cost: 2 })
    const waiting = queue.take({ maxWait: '1s' })
    await expect(queue.take()).rejects.toMatchObject({ code: 'E_RATE_LIMIT_QUEUE' })
    await expect(waiting).rejects.toMatchObject({ code: 'E_RATE_LIMIT_QUEUE', policy: 'tiny' })
  })

  /**
   * Uses the one point of `queue`'s hour-long window and queues a second call behind it; resolves
   * once it waits, with a promise of the error that call fails with (settled into a value at once,
   * so a rejection during a later close() is never unhandled; wrapped, so this does not wait for it).
   */
  async function queuedBehindWindow(queue: OutboundQueue): Promise<{ waiting: Promise<unknown> }> {
    await queue.take()
    const waiting = queue.take().then(
      () => undefined,
      (error: unknown) => error,
    )
    await new Promise((r) => setTimeout(r, 50))
    return { waiting }
  }

  it('fails waiting queued calls at once when the kit is closed, not when the window ends', async () => {
    const k = createRedkit({ redis: redis.url, prefix, configFile: false, env: {} })
    const queue = k.rateLimits.queue({
      name: 'closing',
      limits: [{ points: 1, duration: '1h' }],
      onRedisError: 'closed',
    })
    const { waiting } = await queuedBehindWindow(queue)
    // Every queue is closed, although each one unregisters itself from the kit as it closes.
    const second = k.rateLimits.queue({ name: 'closing-too', limits: [{ points: 1, duration: '1h' }] })
    const { waiting: waitingToo } = await queuedBehindWindow(second)
    const started = Date.now()
    await k.close()
    expect(await waiting).toBeInstanceOf(RateLimitQueueError)
    expect(await waitingToo).toBeInstanceOf(RateLimitQueueError)
    expect(Date.now() - started).toBeLessThan(2000)
  })

  it('closing one queue fails its waiting and later calls at once and leaves the kit and other queues working', async () => {
    const k = kit()
    const limits = [{ points: 1, duration: '1h' }]
    const queue = k.rateLimits.queue({ name: 'closed-alone', limits })
    const { waiting } = await queuedBehindWindow(queue)
    const started = Date.now()
    queue.close()
    queue.close() // twice is harmless
    expect(await waiting).toMatchObject({ code: 'E_RATE_LIMIT_QUEUE', policy: 'closed-alone' })
    expect(Date.now() - started).toBeLessThan(2000)
    await expect(queue.run(() => 'never')).rejects.toThrow(/queue was closed; create a new one/)
    const other = k.rateLimits.queue({ name: 'still-open', limits })
    expect(await other.run(() => 'sent')).toBe('sent')
    expect(await k.hub.exec((r) => r.ping())).toBe('PONG')
  })

  it('never lets a block end before the window it was earned in, and a refund never lifts it', async () => {
    const k = kit()
    const options = {
      name: 'short-block',
      limits: [{ name: 'minute', points: 2, duration: '1m' }],
      blockDuration: '1s',
    }
    await k.rateLimits.consume('s', options)
    await k.rateLimits.consume('s', options)
    const over = await k.rateLimits.consume('s', options)
    expect(over).toMatchObject({ allowed: false, blocked: true, violated: ['minute'] })
    expect(over.retryAfterMs).toBeGreaterThan(50_000)
    const other = kit()
    await other.rateLimits.refund('s', options)
    const still = await other.rateLimits.consume('s', options)
    expect(still).toMatchObject({ allowed: false, blocked: true, source: 'redis', violated: ['minute'] })
    expect(still.limits[0]?.remaining).toBe(0)
  })
})
