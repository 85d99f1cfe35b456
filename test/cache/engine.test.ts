import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { packEntry, unpackEntry } from '../../src/cache/entry.js'
import { TagVersions } from '../../src/cache/tags.js'
import {
  CacheEngine,
  CodecError,
  ConfigError,
  createRedkit,
  type Redkit,
  type RedkitEventMap,
} from '../../src/index.js'
import { type StandaloneRedis, startRedis, uniquePrefix } from '../helpers/index.js'

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

let redis: StandaloneRedis
let kitA: Redkit
let kitB: Redkit
const prefix = uniquePrefix('cache')

function record<K extends keyof RedkitEventMap>(kit: Redkit, name: K): RedkitEventMap[K][] {
  const seen: RedkitEventMap[K][] = []
  kit.on(name, (payload) => seen.push(payload))
  return seen
}

/** Waits until `check` holds (bus messages are asynchronous). */
async function eventually(check: () => boolean | Promise<boolean>, ms = 3000): Promise<void> {
  const deadline = Date.now() + ms
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('condition not met in time')
    await sleep(20)
  }
}

beforeAll(async () => {
  redis = await startRedis()
  // Two kits on one server stand in for two app instances.
  kitA = createRedkit({ redis: redis.url, prefix, configFile: false, env: {} })
  kitB = createRedkit({ redis: redis.url, prefix, configFile: false, env: {} })
  // Subscribe both buses before the tests run.
  kitA.cache
  kitB.cache
  await sleep(200)
})

afterAll(async () => {
  await kitA?.close()
  await kitB?.close()
  await redis?.stop()
})

describe('cache engine: values', () => {
  it('stores and returns typed values; absent keys give undefined', async () => {
    const value = { at: new Date(0), n: 10n ** 30n, buf: Buffer.from('x'), none: null, m: new Map([[1, 2]]) }
    expect(await kitA.cache.set('typed', value, { ttl: '1m' })).toBe(true)
    expect(await kitA.cache.get('typed')).toEqual(value)
    expect(await kitB.cache.get('typed')).toEqual(value)
    expect(await kitA.cache.get('absent')).toBeUndefined()
  })

  it('getOrSet runs the factory on a miss and serves the stored value afterwards', async () => {
    let calls = 0
    const hits = record(kitA, 'cache:hit')
    const factory = async () => {
      calls++
      return { total: 5 }
    }
    expect(await kitA.cache.getOrSet('once', factory, { ttl: '1m' })).toEqual({ total: 5 })
    expect(await kitA.cache.getOrSet('once', factory, { ttl: '1m' })).toEqual({ total: 5 })
    expect(await kitB.cache.getOrSet('once', factory, { ttl: '1m' })).toEqual({ total: 5 })
    expect(calls).toBe(1)
    expect(hits.some((h) => h.key === 'once' && h.layer === 'l1' && h.cache === 'value')).toBe(true)
  })

  it('expires entries after their ttl', async () => {
    let calls = 0
    const factory = async () => ++calls
    await kitA.cache.getOrSet('short', factory, { ttl: 100 })
    await sleep(200)
    expect(await kitA.cache.getOrSet('short', factory, { ttl: 100 })).toBe(2)
  })

  it('2 kits × 50 concurrent calls on a cold key run the factory once', async () => {
    let calls = 0
    const factory = async () => {
      calls++
      await sleep(150)
      return 'computed'
    }
    const results = await Promise.all(
      Array.from({ length: 100 }, (_, i) =>
        (i % 2 === 0 ? kitA : kitB).cache.getOrSet('stampede', factory, { ttl: '1m' }),
      ),
    )
    expect(results.every((r) => r === 'computed')).toBe(true)
    expect(calls).toBe(1)
  })

  it('a waiter takes over at once when the lease holder on another kit fails', async () => {
    // Settled into a value at once, so the holder's rejection is never left unhandled.
    const failing = kitA.cache
      .getOrSet('takeover', async () => {
        await sleep(200)
        throw new Error('holder failed')
      })
      .then(
        () => undefined,
        (error: Error) => error,
      )
    await sleep(50)
    const started = Date.now()
    const value = await kitB.cache.getOrSet('takeover', async () => 'from the waiter')
    expect((await failing)?.message).toBe('holder failed')
    expect(value).toBe('from the waiter')
    // Well before the 5 s wait bound: the released lease ended the wait.
    expect(Date.now() - started).toBeLessThan(2500)
  })

  it('serves stale within grace while exactly one background refresh runs', async () => {
    let calls = 0
    let release: () => void = () => undefined
    const factory = async () => {
      calls++
      if (calls > 1) await new Promise<void>((r) => (release = r))
      return `v${calls}`
    }
    const stale = record(kitA, 'cache:stale')
    await kitA.cache.getOrSet('graceful', factory, { ttl: 100, grace: '1m' })
    await sleep(150)
    const served = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        (i % 2 === 0 ? kitA : kitB).cache.getOrSet('graceful', factory, { ttl: 100, grace: '1m' }),
      ),
    )
    expect(served.every((v) => v === 'v1')).toBe(true)
    expect(stale.length).toBeGreaterThan(0)
    await eventually(() => calls === 2)
    release()
    await eventually(async () => (await kitA.cache.get('graceful')) === 'v2')
    await sleep(100)
    expect(calls).toBe(2)
  })

  it('a refresh that wins the lease after another instance stored a fresh copy does not run the factory', async () => {
    let calls = 0
    const factory = async () => `v${++calls}`
    const options = { ttl: 100, grace: '1m' }
    await kitA.cache.getOrSet('refreshed-elsewhere', factory, options)
    // What another instance's finished refresh leaves: a fresh copy in Redis and its lease released.
    // Stored in the same millisecond as the stale copy, as a quick refresh elsewhere can be.
    await kitB.cache.set('fresh-copy', 'from B', { ttl: '1m' })
    const staleCopy = unpackEntry((await kitA.redis.getBuffer(kitA.cache.redisKey('refreshed-elsewhere')))!)!
    const freshCopy = unpackEntry((await kitB.redis.getBuffer(kitB.cache.redisKey('fresh-copy')))!)!
    const fresh = packEntry({ ...freshCopy, storedAt: staleCopy.storedAt })
    await sleep(150)
    // It lands between this instance's stale read and its lease: the stale event is emitted as the
    // refresh starts, before it asks for the lease, and commands on one connection keep their order.
    const off = kitA.on('cache:stale', ({ key }) => {
      if (key !== 'refreshed-elsewhere') return
      off()
      void kitA.redis.set(kitA.cache.redisKey('refreshed-elsewhere'), fresh)
    })
    expect(await kitA.cache.getOrSet('refreshed-elsewhere', factory, options)).toBe('v1')
    await sleep(200)
    expect(calls).toBe(1)
    expect(await kitB.cache.get('refreshed-elsewhere')).toBe('from B')
  })

  it('a miss that wins the lease after another instance stored the value does not run the factory', async () => {
    let calls = 0
    const factory = async () => `v${++calls}`
    await kitB.cache.set('stored-elsewhere-source', 'from B', { ttl: '1m' })
    const fresh = await kitB.redis.getBuffer(kitB.cache.redisKey('stored-elsewhere-source'))
    const hits = record(kitA, 'cache:hit')
    // What another instance's finished computation leaves (its value stored, its lease released),
    // landing between this instance's read that missed and its lease request: the miss event is
    // emitted before the lease is asked for, and commands on one connection keep their order.
    const off = kitA.on('cache:miss', ({ key }) => {
      if (key !== 'stored-elsewhere') return
      off()
      void kitA.redis.set(kitA.cache.redisKey('stored-elsewhere'), fresh!)
    })
    expect(await kitA.cache.getOrSet('stored-elsewhere', factory, { ttl: '1m' })).toBe('from B')
    expect(calls).toBe(0)
    expect(hits).toContainEqual({ cache: 'value', key: 'stored-elsewhere', layer: 'l2' })
    // The lease it won is given back: the next computation of the key does not wait for it.
    await kitA.cache.delete('stored-elsewhere')
    const started = Date.now()
    expect(await kitB.cache.getOrSet('stored-elsewhere', factory, { ttl: '1m' })).toBe('v1')
    expect(Date.now() - started).toBeLessThan(1000)
  })

  it('a miss that loses the lease to a holder whose value is already stored serves it without waiting', async () => {
    // No wait at all: without the read sent with the lease request, it would compute the value itself.
    const a = kitA.cache.namespace('lost-lease', { wait: 0 })
    const b = kitB.cache.namespace('lost-lease')
    await b.set('source', 'from B', { ttl: '1m' })
    const fresh = await kitB.redis.getBuffer(b.redisKey('source'))
    // Another instance computed the value: stored, its lease not yet released.
    const token = await b.acquireLease('k', 10_000)
    const off = kitA.on('cache:miss', ({ cache, key }) => {
      if (cache !== 'lost-lease' || key !== 'k') return
      off()
      void kitA.redis.set(a.redisKey('k'), fresh!)
    })
    let calls = 0
    const factory = () => `v${++calls}`
    expect(await a.getOrSet('k', factory, { ttl: '1m' })).toBe('from B')
    expect(calls).toBe(0)
    await b.releaseLease('k', token as string)
  })

  it('a factory that never settles holds its key in this process for one lease only', async () => {
    const e = kitA.cache.namespace('hang', { lease: '200ms', wait: '100ms' })
    const within = <T>(promise: Promise<T>, ms: number) =>
      Promise.race([promise, sleep(ms).then(() => 'still waiting')])
    void e.getOrSet('k', () => new Promise<string>(() => undefined))
    await sleep(500)
    expect(
      await within(
        e.getOrSet('k', () => 'fresh'),
        2000,
      ),
    ).toBe('fresh')
    // A caller that joined the hung computation stops waiting for it once the lease is over.
    void e.getOrSet('joined', () => new Promise<string>(() => undefined))
    await sleep(50)
    const started = Date.now()
    expect(
      await within(
        e.getOrSet('joined', () => 'fresh'),
        2000,
      ),
    ).toBe('fresh')
    expect(Date.now() - started).toBeLessThan(1000)
  })

  it('serves stale when the factory fails within staleIfError, and throws after it', async () => {
    let fail = false
    const factory = async () => {
      if (fail) throw new Error('database down')
      return 'good'
    }
    await kitA.cache.getOrSet('sie', factory, { ttl: 100, staleIfError: 300 })
    await sleep(150)
    fail = true
    expect(await kitA.cache.getOrSet('sie', factory, { ttl: 100, staleIfError: 300 })).toBe('good')
    await sleep(300)
    await expect(kitA.cache.getOrSet('sie', factory, { ttl: 100, staleIfError: 300 })).rejects.toThrow(
      'database down',
    )
  })

  it('refreshes early with XFetch before the entry expires', async () => {
    let calls = 0
    const factory = async () => {
      calls++
      await sleep(20)
      return calls
    }
    await kitA.cache.getOrSet('xfetch', factory, { ttl: 300, xfetch: 1e6 })
    expect(await kitA.cache.getOrSet('xfetch', factory, { ttl: 300, xfetch: 1e6 })).toBe(1)
    await eventually(() => calls === 2)
    const ttl = await kitA.redis.pttl(kitA.cache.redisKey('xfetch'))
    expect(ttl).toBeGreaterThan(0)
  })

  it('shortens TTLs at random with jitter', async () => {
    const ttls: number[] = []
    for (let i = 0; i < 10; i++) {
      await kitA.cache.set(`jit${i}`, i, { ttl: 100_000, jitter: 0.5 })
      ttls.push(await kitA.redis.pttl(kitA.cache.redisKey(`jit${i}`)))
    }
    expect(ttls.every((t) => t > 45_000 && t <= 100_000)).toBe(true)
    expect(new Set(ttls).size).toBeGreaterThan(1)
  })

  it('does not store values over maxSize but still returns them', async () => {
    const bypass = record(kitA, 'cache:bypass')
    const big = 'x'.repeat(5000)
    expect(await kitA.cache.getOrSet('big', async () => big, { ttl: '1m', maxSize: 1000 })).toBe(big)
    expect(await kitA.redis.exists(kitA.cache.redisKey('big'))).toBe(0)
    expect(bypass.some((b) => b.reason === 'too-large')).toBe(true)
  })

  it('compresses large values on request and reads them back', async () => {
    const rows = Array.from({ length: 500 }, (_, i) => ({ id: i, name: `row ${i}`, at: new Date(i) }))
    await kitA.cache.set('compressed', rows, { ttl: '1m' })
    const zipped = kitA.cache.namespace('zipped', { compressAbove: 1024 })
    await zipped.set('rows', rows)
    const plainBytes = (await kitA.redis.getBuffer(kitA.cache.redisKey('compressed')))?.length ?? 0
    const zippedBytes = (await kitA.redis.getBuffer(zipped.redisKey('rows')))?.length ?? 0
    expect(zippedBytes).toBeLessThan(plainBytes / 2)
    expect(await kitB.cache.namespace('zipped').get('rows')).toEqual(rows)
  })

  it('returns a value it cannot encode without caching it, and set() throws CodecError', async () => {
    const errors = record(kitA, 'cache:error')
    const withFn = { n: 1, fn: () => 2 }
    expect(await kitA.cache.getOrSet('fn', async () => withFn, { ttl: '1m' })).toBe(withFn)
    expect(await kitA.redis.exists(kitA.cache.redisKey('fn'))).toBe(0)
    expect(errors.some((e) => e.error instanceof CodecError)).toBe(true)
    const circular: Record<string, unknown> = {}
    circular.self = circular
    await expect(kitA.cache.set('circ', circular)).rejects.toThrow(CodecError)
  })

  it('rejects bad options with ConfigError', async () => {
    expect(() => kitA.cache.namespace('bad name')).toThrow(ConfigError)
    expect(() => kitA.cache.namespace('ok', { jitter: 2 })).toThrow(ConfigError)
    await expect(kitA.cache.set('k', 1, { ttl: 'soon' })).rejects.toThrow(ConfigError)
  })

  it('keeps user keys from injecting separators or hash tags', () => {
    expect(kitA.cache.redisKey('a:b{c}')).toBe(`${prefix}:cache:value:e:a%3Ab%7Bc%7D`)
  })
})

describe('cache engine: invalidation across instances', () => {
  it('an invalidation by tag on one kit empties the other kit’s L1', async () => {
    const hitsB = record(kitB, 'cache:hit')
    let calls = 0
    const factory = async () => ++calls
    await kitA.cache.getOrSet('tagged', factory, { ttl: '1m', tags: ['orders'] })
    await kitB.cache.getOrSet('tagged', factory, { ttl: '1m', tags: ['orders'] })
    await kitB.cache.getOrSet('tagged', factory, { ttl: '1m', tags: ['orders'] })
    expect(hitsB.filter((h) => h.key === 'tagged').map((h) => h.layer)).toEqual(['l2', 'l1'])
    const invalidations = record(kitA, 'cache:invalidate')
    await kitA.cache.invalidateTags(['orders'])
    expect(invalidations).toEqual([{ cache: 'value', tags: ['orders'] }])
    await eventually(async () => (await kitB.cache.get('tagged')) === undefined)
    expect(await kitB.cache.getOrSet('tagged', factory, { ttl: '1m', tags: ['orders'] })).toBe(2)
  })

  it('tag invalidation reaches entries of every namespace and the raw API', async () => {
    const other = kitA.cache.namespace('other')
    await other.set('x', 1, { tags: ['catalog'] })
    await kitA.cache.writeEntry('raw', Buffer.from('body'), { freshMs: 60_000, tags: ['catalog'] })
    expect((await kitB.cache.readEntry('raw'))?.value.toString()).toBe('body')
    await kitB.cache.invalidateTags(['catalog'])
    await eventually(async () => (await kitA.cache.readEntry('raw')) === undefined)
    expect(await other.get('x')).toBeUndefined()
  })

  it('a delete on one kit removes the key from the other kit’s L1', async () => {
    await kitA.cache.set('del', 'v', { ttl: '1m' })
    expect(await kitB.cache.get('del')).toBe('v')
    expect(await kitB.cache.get('del')).toBe('v')
    await kitA.cache.delete('del')
    await eventually(async () => (await kitB.cache.get('del')) === undefined)
  })

  it('a write on one kit replaces the other kit’s L1 copy', async () => {
    await kitA.cache.set('over', 'old', { ttl: '1m' })
    expect(await kitB.cache.get('over')).toBe('old')
    await kitA.cache.set('over', 'new', { ttl: '1m' })
    await eventually(async () => (await kitB.cache.get('over')) === 'new')
  })

  it('a value computed while its tag was invalidated is not served', async () => {
    let release: () => void = () => undefined
    const slow = kitA.cache.getOrSet(
      'racy',
      async () => {
        await new Promise<void>((r) => (release = r))
        return 'before-invalidation'
      },
      { ttl: '1m', tags: ['racy'] },
    )
    await sleep(50)
    await kitB.cache.invalidateTags(['racy'])
    release()
    expect(await slow).toBe('before-invalidation')
    expect(await kitB.cache.get('racy')).toBeUndefined()
  })

  it('a value computed while its key was deleted or cleared, here or elsewhere, is not stored over it', async () => {
    const ns = (kit: Redkit) => kit.cache.namespace('computed-deleted')
    const cases: Array<[string, () => Promise<unknown>]> = [
      ['here', () => ns(kitA).delete('here')],
      ['elsewhere', () => ns(kitB).delete('elsewhere')],
      ['cleared', () => ns(kitB).clear()],
    ]
    for (const [key, invalidate] of cases) {
      let calls = 0
      let started: () => void = () => undefined
      let release: () => void = () => undefined
      const running = new Promise<void>((r) => (started = r))
      const factory = async () => {
        calls++
        if (calls === 1) {
          started()
          await new Promise<void>((r) => (release = r))
        }
        return `v${calls}`
      }
      const slow = ns(kitA).getOrSet(key, factory, { ttl: '1m' })
      await running
      // The data changed and the key was deleted while the factory had read the old data.
      await invalidate()
      release()
      expect(await slow).toBe('v1')
      await eventually(async () => (await ns(kitA).get(key)) === undefined)
      expect(await ns(kitB).get(key)).toBeUndefined()
      expect(await ns(kitA).getOrSet(key, factory, { ttl: '1m' })).toBe('v2')
    }
  })

  it('clear() removes the namespace everywhere, by SCAN, and leaves other namespaces', async () => {
    const ns = kitA.cache.namespace('clearme')
    const keep = kitA.cache.namespace('keepme')
    for (let i = 0; i < 30; i++) await ns.set(`k${i}`, i)
    await keep.set('k', 'kept')
    expect(await kitB.cache.namespace('clearme').get('k1')).toBe(1)
    expect(await ns.clear()).toBe(30)
    expect(await ns.get('k1')).toBeUndefined()
    await eventually(async () => (await kitB.cache.namespace('clearme').get('k1')) === undefined)
    expect(await keep.get('k')).toBe('kept')
  })
})

describe('cache engine: reads in flight during a delete or clear', () => {
  it('a read in flight when the key is deleted does not put the old entry back in memory', async () => {
    const a = kitA.cache.namespace('inflight')
    const b = kitB.cache.namespace('inflight')
    await b.set('k', 'old', { ttl: '1m' })
    await sleep(50) // b's bus message about its write has landed on a
    const pending = a.get('k')
    await a.delete('k')
    await pending
    expect(await kitB.redis.exists(a.redisKey('k'))).toBe(0)
    expect(await a.get('k')).toBeUndefined()
  })

  it('a read in flight when the namespace is cleared does not put the old entry back in memory', async () => {
    const a = kitA.cache.namespace('inflight-clear')
    const b = kitB.cache.namespace('inflight-clear')
    await b.set('k', 'old', { ttl: '1m' })
    await sleep(50) // b's bus message about its write has landed on a
    const pending = a.get('k')
    await a.clear()
    await pending
    expect(await kitB.redis.exists(a.redisKey('k'))).toBe(0)
    expect(await a.get('k')).toBeUndefined()
  })
  it('a read in flight when news from another instance undoes a write does not put it back in memory', async () => {
    const a = kitA.cache.namespace('undo-inflight')
    const keys = kitA.keys.module('cache')
    const channel = keys.key('#bus')
    const rkey = a.redisKey('k')
    // Another instance invalidates the tag in Redis; its message comes after this instance's write,
    // which read the new version for an origin call that started before: the write is undone.
    const since = a.invalidationMark()
    await kitB.redis.incr(keys.key('#tags', 'undo-tag'))
    expect(await a.writeEntry('k', Buffer.from('old'), { freshMs: 60_000, tags: ['undo-tag'], since })).toBe(
      true,
    )
    // A rewrite elsewhere drops the memory copy (the write stays in mind), so the next read asks
    // Redis. A probe rewritten in Redis alone and named in the same message tells when it landed.
    await a.writeEntry('probe', Buffer.from('before'), { freshMs: 60_000 })
    const now = Date.now()
    const after = packEntry({
      value: Buffer.from('after'),
      storedAt: now,
      freshUntil: now + 60_000,
      staleUntil: now + 60_000,
      tags: [],
      tagVersions: [],
      computeMs: 0,
      decoded: undefined,
      checkedUntil: 0,
    })
    await kitB.redis.set(a.redisKey('probe'), after)
    await kitB.redis.publish(
      channel,
      JSON.stringify({ i: 'other', t: 'keys', k: [rkey, a.redisKey('probe')] }),
    )
    await eventually(async () => (await a.readEntry('probe'))?.value.toString() === 'after')
    // The read's GET waits behind a BLPOP on the same connection while the late news arrives and
    // undoes the write: the GET still finds the entry, the UNLINK follows it.
    const blocked = kitA.redis.blpop(`${prefix}:never-pushed`, 0.4)
    const pending = a.readEntry('k')
    await kitB.redis.publish(channel, JSON.stringify({ i: 'other', t: 'tags', v: { 'undo-tag': 1 } }))
    await blocked
    expect((await pending)?.value.toString()).toBe('old')
    await eventually(async () => (await kitB.redis.exists(rkey)) === 0)
    expect(await a.readEntry('k')).toBeUndefined()
  })
})

describe('cache engine: tag versions', () => {
  it('a version read from Redis never replaces a newer one heard on the bus meanwhile', async () => {
    const tags = new TagVersions(kitA, kitA.keys.module('cache'), 5000)
    await kitA.redis.set(tags.key('moving'), '3')
    const reading = tags.current(['moving'])
    // The bus reports the next invalidation before the GET's reply is processed.
    tags.learn('moving', 4)
    expect(await reading).toEqual([4])
    expect(tags.knownCurrent(['moving'], [3])).toBe(false)
    expect(tags.knownCurrent(['moving'], [4])).toBe(true)
  })

  it('a tag invalidation whose bus message is lost stops memory hits after tagCacheTtl', async () => {
    const engine = new CacheEngine(kitA, { name: 'lost-message', tagCacheTtl: '200ms' })
    await engine.set('k', 'v', { ttl: '1m', tags: ['lost'] })
    expect(await engine.get('k')).toBe('v')
    // Another instance invalidates the tag and its message never arrives: INCR, no PUBLISH.
    await kitB.redis.incr(kitA.keys.module('cache').key('#tags', 'lost'))
    await sleep(300)
    expect(await engine.get('k')).toBeUndefined()
  })
})

describe('cache engine: raw entries and stampede tools', () => {
  it('writes and reads raw entries with their timeline', async () => {
    const before = Date.now()
    await kitA.cache.writeEntry('page', Buffer.from([0, 1, 2]), { freshMs: 1000, staleMs: 5000, tags: ['p'] })
    const entry = await kitB.cache.readEntry('page')
    expect(entry?.value).toEqual(Buffer.from([0, 1, 2]))
    expect(entry?.tags).toEqual(['p'])
    expect(entry?.storedAt).toBeGreaterThanOrEqual(before)
    expect((entry?.freshUntil ?? 0) - (entry?.storedAt ?? 0)).toBe(1000)
    expect((entry?.staleUntil ?? 0) - (entry?.storedAt ?? 0)).toBe(6000)
    await kitA.cache.deleteKeys(['page'])
    expect(await kitA.cache.readEntry('page')).toBeUndefined()
    await eventually(async () => (await kitB.cache.readEntry('page')) === undefined)
  })

  it('a write with a snapshot taken before an invalidation counts as absent', async () => {
    const snapshot = await kitA.cache.tagSnapshot(['snap'])
    await kitB.cache.invalidateTags(['snap'])
    await kitA.cache.writeEntry('snapped', Buffer.from('old'), { freshMs: 60_000, tags: ['snap'], snapshot })
    expect(await kitA.cache.readEntry('snapped')).toBeUndefined()
  })

  it('a write marked before a purge or a tag invalidation is skipped; one marked after is kept', async () => {
    const cache = kitA.cache
    let since = cache.invalidationMark()
    await cache.deleteKeys(['marked-1'])
    expect(await cache.writeEntry('marked-1', Buffer.from('old'), { freshMs: 60_000, since })).toBe(false)
    expect(await cache.readEntry('marked-1')).toBeUndefined()
    since = cache.invalidationMark()
    await kitB.cache.invalidateTags(['marked-tag'])
    await eventually(async () => {
      const written = await cache.writeEntry('marked-2', Buffer.from('old'), {
        freshMs: 60_000,
        tags: ['marked-tag'],
        since,
      })
      return !written
    })
    expect(await cache.readEntry('marked-2')).toBeUndefined()
    since = cache.invalidationMark()
    expect(await cache.writeEntry('marked-1', Buffer.from('new'), { freshMs: 60_000, since })).toBe(true)
    expect((await cache.readEntry('marked-1'))?.value.toString()).toBe('new')
  })

  it('news of another instance invalidation that arrives after a marked write undoes it', async () => {
    const cache = kitA.cache
    const keys = kitA.keys.module('cache')
    const channel = keys.key('#bus')
    // Another instance's purge and tag invalidation land in Redis; their messages come later.
    const since = cache.invalidationMark()
    await kitB.redis.incr(keys.key('#tags', 'late-tag'))
    expect(await cache.writeEntry('late-key', Buffer.from('old'), { freshMs: 60_000, since })).toBe(true)
    expect(
      await cache.writeEntry('late-tagged', Buffer.from('old'), {
        freshMs: 60_000,
        tags: ['late-tag'],
        since,
      }),
    ).toBe(true)
    expect((await cache.readEntry('late-tagged'))?.value.toString()).toBe('old')
    await kitB.redis.publish(
      channel,
      JSON.stringify({ i: 'other', t: 'keys', k: [cache.redisKey('late-key')], d: 1 }),
    )
    await kitB.redis.publish(channel, JSON.stringify({ i: 'other', t: 'tags', v: { 'late-tag': 1 } }))
    await eventually(async () => (await cache.readEntry('late-key')) === undefined)
    await eventually(async () => (await cache.readEntry('late-tagged')) === undefined)
  })

  it('leases are exclusive and released by their holder only', async () => {
    const token = await kitA.cache.acquireLease('job', 5000)
    expect(token).toBeTypeOf('string')
    expect(await kitB.cache.acquireLease('job', 5000)).toBeNull()
    await kitB.cache.releaseLease('job', 'not-the-token')
    expect(await kitB.cache.acquireLease('job', 5000)).toBeNull()
    await kitA.cache.releaseLease('job', token as string)
    expect(await kitB.cache.acquireLease('job', 5000)).toBeTypeOf('string')
  })

  it('waitForEntry wakes when another instance writes, and gives up after its bound', async () => {
    const waiting = kitB.cache.waitForEntry('awaited', 3000)
    await sleep(30)
    await kitA.cache.writeEntry('awaited', Buffer.from('done'), { freshMs: 60_000 })
    expect((await waiting)?.value.toString()).toBe('done')
    const started = Date.now()
    expect(await kitB.cache.waitForEntry('never', 200)).toBeUndefined()
    expect(Date.now() - started).toBeLessThan(2000)
  })

  it('waitForEntry with leaseOf stops once the lease is let go without an entry', async () => {
    const token = await kitA.cache.acquireLease('unstorable', 10_000)
    expect(token).toBeTypeOf('string')
    const started = Date.now()
    const waiting = kitB.cache.waitForEntry('unstorable', 3000, { leaseOf: 'unstorable' })
    await sleep(100)
    await kitA.cache.releaseLease('unstorable', token as string)
    expect(await waiting).toBeUndefined()
    expect(Date.now() - started).toBeLessThan(1000)
  })

  it('singleFlight runs one call per key at a time', async () => {
    let calls = 0
    const fn = async () => {
      calls++
      await sleep(50)
      return calls
    }
    const results = await Promise.all([1, 2, 3].map(() => kitA.cache.singleFlight('sf', fn)))
    expect(results).toEqual([1, 1, 1])
    expect(await kitA.cache.singleFlight('sf', fn)).toBe(2)
  })

  it('emits store, miss and hit events with the namespace name', async () => {
    const ns = kitA.cache.namespace('events')
    const stores = record(kitA, 'cache:store')
    const misses = record(kitA, 'cache:miss')
    await ns.getOrSet('e', async () => 'v')
    expect(misses).toContainEqual({ cache: 'events', key: 'e' })
    expect(stores[0]?.cache).toBe('events')
    expect(stores[0]?.bytes).toBeGreaterThan(0)
  })

  it('concurrent reads of one key share one GET, and a read after a write sees the write', async () => {
    const ns = kitA.cache.namespace('shared-read', { l1: false })
    await ns.set('hot', { v: 1 })
    let commands = 0
    const off = kitA.on('command', () => commands++)
    const values = await Promise.all(Array.from({ length: 20 }, () => ns.get<{ v: number }>('hot')))
    off()
    expect(values.every((v) => v?.v === 1)).toBe(true)
    expect(commands).toBeLessThan(20)
    const pending = ns.get('hot')
    await ns.set('hot', { v: 2 })
    expect(await ns.get('hot')).toEqual({ v: 2 })
    await pending
  })

  it('works with L1 off: every hit comes from Redis', async () => {
    const noL1 = kitA.cache.namespace('nol1', { l1: false })
    const hits = record(kitA, 'cache:hit')
    await noL1.set('k', 'v')
    expect(await noL1.get('k')).toBe('v')
    expect(await noL1.get('k')).toBe('v')
    expect(hits.filter((h) => h.cache === 'nol1').map((h) => h.layer)).toEqual(['l2', 'l2'])
  })
})
