import type { Express, RequestHandler } from 'express'
import request from 'supertest'
import { describe, expect, it } from 'vitest'
import { type ResponseCacheMiddleware, responseCache } from '../../middleware/response-cache.js'
import type { Redkit } from '../../src/index.js'
import { appWith, eventually, listen, nextStore, sleep, twoInstances } from './setup.js'

let kitA: Redkit
let kitB: Redkit
let n = 0
const path = (name: string) => `/s${++n}/${name}`

// Two kits with one prefix stand for two instances of one app.
twoInstances('rc-stale', (a, b) => {
  kitA = a
  kitB = b
})

/** An app whose handler at `p`, behind `cache`, answers `v<n>` on its nth call with `cacheControl(n)`. */
function countingApp(cache: RequestHandler, p: string, cacheControl: (n: number) => string) {
  let calls = 0
  const app = appWith(cache, (x) =>
    x.get(p, (_req, res) => {
      calls++
      res.set('Cache-Control', cacheControl(calls))
      res.send(`v${calls}`)
    }),
  )
  return { app, calls: () => calls }
}

interface Stored {
  key: string
  rkey: string
  bytes: Buffer
}

/** Requests `p` once on kitA and takes the response it stored out of the cache (memory and Redis). */
async function takeStored(cache: ResponseCacheMiddleware, app: Express, p: string): Promise<Stored> {
  const stored = nextStore(kitA)
  await request(app).get(p)
  const key = await stored
  const rkey = cache.store.redisKey(key)
  const bytes = await kitA.redis.getBuffer(rkey)
  if (!bytes) throw new Error(`nothing stored under ${rkey}`)
  await cache.store.delete(key)
  return { key, rkey, bytes }
}

/**
 * Puts `entry` back in Redis, behind the cache's back, when kitA emits `event` for its key: that
 * event is emitted just before the lease is asked for, and commands on one connection keep their
 * order, so the write lands between the read that led there and the lease request.
 */
function writeOn(event: 'cache:miss' | 'cache:stale', entry: Stored): void {
  const off = kitA.on(event, (e) => {
    if (e.key !== entry.key) return
    off()
    void kitA.redis.set(entry.rkey, entry.bytes)
  })
}

describe('stale-while-revalidate', () => {
  it('serves stale while exactly one background refresh runs', async () => {
    const p = path('swr')
    let calls = 0
    const app = appWith(responseCache(kitA), (a) =>
      a.get(p, async (_req, res) => {
        calls++
        const mine = calls
        await sleep(100)
        res.set('Cache-Control', 'max-age=1, stale-while-revalidate=30')
        res.send(`v${mine}`)
      }),
    )
    let stored = nextStore(kitA)
    await request(app).get(p)
    await stored
    await sleep(1100)
    stored = nextStore(kitA)
    const answers = await Promise.all(Array.from({ length: 10 }, () => request(app).get(p)))
    for (const a of answers) {
      expect(a.text).toBe('v1')
      expect(a.headers['x-cache']).toBe('STALE')
    }
    await stored
    expect(calls).toBe(2)
    const fresh = await request(app).get(p)
    expect([fresh.text, fresh.headers['x-cache']]).toEqual(['v2', 'HIT'])
  })

  it('runs one background refresh across two instances', async () => {
    const p = path('swr-two')
    let calls = 0
    const handler = async (_req: unknown, res: import('express').Response) => {
      calls++
      const mine = calls
      await sleep(200)
      res.set('Cache-Control', 'max-age=1, stale-while-revalidate=30')
      res.send(`v${mine}`)
    }
    const appA = appWith(responseCache(kitA), (a) => a.get(p, handler))
    const appB = appWith(responseCache(kitB), (a) => a.get(p, handler))
    let stored = nextStore(kitA)
    await request(appA).get(p)
    await stored
    await sleep(1100)
    stored = nextStore(kitA)
    const storedB = nextStore(kitB)
    const answers = await Promise.all(
      Array.from({ length: 10 }, (_, i) => request(i % 2 ? appA : appB).get(p)),
    )
    for (const a of answers) expect([a.text, a.headers['x-cache']]).toEqual(['v1', 'STALE'])
    await Promise.race([stored, storedB])
    await sleep(300)
    expect(calls).toBe(2)
  })

  it('the background refresh revalidates with a conditional request', async () => {
    const p = path('swr-304')
    let full = 0
    let notModified = 0
    const app = appWith(responseCache(kitA), (a) =>
      a.get(p, (req, res) => {
        res.set('Cache-Control', 'max-age=1, stale-while-revalidate=30')
        res.set('ETag', '"same"')
        if (req.get('if-none-match') === '"same"') {
          notModified++
          res.status(304).end()
          return
        }
        full++
        res.send('body')
      }),
    )
    let stored = nextStore(kitA)
    await request(app).get(p)
    await stored
    await sleep(1100)
    stored = nextStore(kitA)
    expect((await request(app).get(p)).headers['x-cache']).toBe('STALE')
    await stored
    expect([full, notModified]).toEqual([1, 1])
    const fresh = await request(app).get(p)
    expect([fresh.text, fresh.headers['x-cache']]).toEqual(['body', 'HIT'])
  })

  it('takes the window from the option when the response has no directive', async () => {
    const p = path('swr-option')
    let calls = 0
    const app = appWith(responseCache(kitA, { ttl: 500, staleWhileRevalidate: '30s' }), (a) =>
      a.get(p, (_req, res) => {
        calls++
        res.send(`v${calls}`)
      }),
    )
    let stored = nextStore(kitA)
    await request(app).get(p)
    await stored
    await sleep(700)
    stored = nextStore(kitA)
    const stale = await request(app).get(p)
    expect([stale.text, stale.headers['x-cache']]).toEqual(['v1', 'STALE'])
    await stored
    expect((await request(app).get(p)).text).toBe('v2')
  })
})

describe('s-maxage (RFC 9111 §5.2.2.10: proxy-revalidate for a shared cache)', () => {
  it('is not served stale through the staleWhileRevalidate option', async () => {
    const p = path('smaxage-swr')
    const origin = countingApp(responseCache(kitA, { staleWhileRevalidate: '1m' }), p, () => 's-maxage=1')
    const stored = nextStore(kitA)
    await request(origin.app).get(p)
    await stored
    await sleep(1200)
    const second = await request(origin.app).get(p)
    expect([second.text, second.headers['x-cache']]).toEqual(['v2', 'MISS'])
  })

  it('is not served stale through the staleIfError option', async () => {
    const p = path('smaxage-sie')
    let calls = 0
    const app = appWith(responseCache(kitA, { staleIfError: '1m', etag: false }), (a) =>
      a.get(p, (_req, res) => {
        calls++
        if (calls > 1) {
          res.status(500).send('broken')
          return
        }
        res.set('Cache-Control', 's-maxage=1')
        res.send('good')
      }),
    )
    const stored = nextStore(kitA)
    await request(app).get(p)
    await stored
    await sleep(1200)
    const second = await request(app).get(p)
    expect([second.status, second.text]).toEqual([500, 'broken'])
  })

  it('is served stale when the response itself says stale-while-revalidate', async () => {
    const p = path('smaxage-own')
    const origin = countingApp(responseCache(kitA), p, () => 's-maxage=1, stale-while-revalidate=30')
    const stored = nextStore(kitA)
    await request(origin.app).get(p)
    await stored
    await sleep(1200)
    const second = await request(origin.app).get(p)
    expect([second.text, second.headers['x-cache']]).toEqual(['v1', 'STALE'])
  })
})

describe('stale-if-error', () => {
  it('serves the stale copy when the origin answers 5xx or throws', async () => {
    const p = path('sie')
    let mode: 'ok' | '503' | 'throw' = 'ok'
    const app = appWith(responseCache(kitA, { etag: false }), (a) =>
      a.get(p, (_req, res) => {
        if (mode === 'throw') throw new Error('origin down')
        if (mode === '503') {
          res.status(503).send('unavailable')
          return
        }
        res.set('Cache-Control', 'max-age=1, stale-if-error=60')
        res.send('good')
      }),
    )
    const stored = nextStore(kitA)
    await request(app).get(p)
    await stored
    await sleep(1100)
    mode = '503'
    const a = await request(app).get(p)
    expect([a.status, a.text, a.headers['x-cache']]).toEqual([200, 'good', 'STALE'])
    mode = 'throw'
    const b = await request(app).get(p)
    expect([b.status, b.text, b.headers['x-cache']]).toEqual([200, 'good', 'STALE'])
  })

  it('passes the error through when the window is over', async () => {
    const p = path('sie-over')
    let fail = false
    const app = appWith(responseCache(kitA, { etag: false }), (a) =>
      a.get(p, (_req, res) => {
        if (fail) {
          res.status(500).send('broken')
          return
        }
        res.set('Cache-Control', 'max-age=1')
        res.send('good')
      }),
    )
    await request(app).get(p)
    await sleep(1100)
    fail = true
    expect((await request(app).get(p)).status).toBe(500)
  })
})

describe('two instances', () => {
  it('2 kits x 50 concurrent requests on a cold key run the origin handler once', async () => {
    const p = path('stampede')
    let calls = 0
    const handler = async (_req: unknown, res: import('express').Response) => {
      calls++
      await sleep(300)
      res.set('Cache-Control', 'max-age=60')
      res.send('expensive')
    }
    const a = await listen(appWith(responseCache(kitA), (x) => x.get(p, handler)))
    const b = await listen(appWith(responseCache(kitB), (x) => x.get(p, handler)))
    try {
      const all = await Promise.all(
        Array.from({ length: 100 }, (_, i) => fetch(`${i % 2 ? a.url : b.url}${p}`).then((r) => r.text())),
      )
      expect(all.every((t) => t === 'expensive')).toBe(true)
      expect(calls).toBe(1)
    } finally {
      a.server.close()
      b.server.close()
    }
  })

  it('a response that turns out not to be storable does not keep the other instance waiting', async () => {
    const p = path('private')
    const handler = async (_req: unknown, res: import('express').Response) => {
      await sleep(300)
      res.set('Cache-Control', 'private')
      res.send('mine')
    }
    const a = await listen(appWith(responseCache(kitA), (x) => x.get(p, handler)))
    const b = await listen(appWith(responseCache(kitB), (x) => x.get(p, handler)))
    try {
      const first = fetch(`${a.url}${p}`).then((r) => r.text())
      await sleep(50)
      const started = Date.now()
      expect(await fetch(`${b.url}${p}`).then((r) => r.text())).toBe('mine')
      expect(Date.now() - started).toBeLessThan(1000)
      expect(await first).toBe('mine')
    } finally {
      a.server.close()
      b.server.close()
    }
  })

  it('an event stream does not hold the lease or the flight while it lasts', async () => {
    const p = path('events')
    const streams: import('express').Response[] = []
    const handler = (_req: unknown, res: import('express').Response) => {
      streams.push(res)
      res.set('Content-Type', 'text/event-stream')
      res.write('data: hello\n\n')
    }
    const a = await listen(appWith(responseCache(kitA), (x) => x.get(p, handler)))
    const b = await listen(appWith(responseCache(kitB), (x) => x.get(p, handler)))
    // Each stream stays open until the end of the test, as a subscriber's would.
    const controller = new AbortController()
    const firstEvent = async (url: string) => {
      const started = Date.now()
      const res = await fetch(url, { signal: controller.signal })
      const chunk = await res.body?.getReader().read()
      expect(Buffer.from(chunk?.value ?? []).toString()).toBe('data: hello\n\n')
      return Date.now() - started
    }
    try {
      // One stream holds instance A's lease; then one on B, and another on B joining B's flight.
      expect(await firstEvent(`${a.url}${p}`)).toBeLessThan(1000)
      expect(await firstEvent(`${b.url}${p}`)).toBeLessThan(1000)
      expect(await firstEvent(`${b.url}${p}`)).toBeLessThan(1000)
    } finally {
      controller.abort()
      for (const res of streams) res.end()
      a.server.close()
      b.server.close()
    }
  })

  it('a miss that wins the lease after another instance stored the response serves it without the origin', async () => {
    const p = path('stored-elsewhere')
    const cache = responseCache(kitA)
    const origin = countingApp(cache, p, () => 'max-age=60')
    // What another instance's finished origin call leaves: the response stored, its lease released.
    const stored = await takeStored(cache, origin.app, p)
    // It lands between this instance's lookup that missed and its lease request.
    writeOn('cache:miss', stored)
    const res = await request(origin.app).get(p)
    expect(res.text).toBe('v1')
    expect(res.headers['x-cache']).toBe('HIT')
    expect(origin.calls()).toBe(1)
  })

  it('a background refresh finds the copy another instance refreshed meanwhile and skips the origin', async () => {
    const p = path('refreshed-elsewhere')
    const cache = responseCache(kitA)
    const origin = countingApp(cache, p, (n) =>
      n === 1 ? 'max-age=1, stale-while-revalidate=30' : 'max-age=60',
    )
    const stale = await takeStored(cache, origin.app, p)
    // Another instance's refresh, done before this one's: a fresh response from the same handler.
    const fresh = await takeStored(cache, origin.app, p)
    await kitA.redis.set(stale.rkey, stale.bytes)
    await sleep(1100)
    // It lands between this instance's stale answer and its refresh's lease request.
    writeOn('cache:stale', fresh)
    const res = await request(origin.app).get(p)
    expect(res.headers['x-cache']).toBe('STALE')
    expect(res.text).toBe('v1')
    await sleep(300)
    expect(origin.calls()).toBe(2)
    const after = await request(origin.app).get(p)
    expect(after.headers['x-cache']).toBe('HIT')
    expect(after.text).toBe('v2')
  })

  it('a purge on one instance empties the other instance memory tier', async () => {
    const p = path('bus')
    let calls = 0
    const handler = (_req: unknown, res: import('express').Response) => {
      calls++
      res.set('Cache-Control', 'max-age=600')
      res.send(`v${calls}`)
    }
    const cacheA = responseCache(kitA)
    const appA = appWith(cacheA, (x) => x.get(p, handler))
    const appB = appWith(responseCache(kitB), (x) => x.get(p, handler))
    const stored = nextStore(kitB)
    await request(appB).get(p)
    await stored
    // B now holds the entry in memory.
    let layer = ''
    const off = kitB.on('cache:hit', (e) => {
      layer = e.layer
    })
    await request(appB).get(p)
    await request(appB).get(p)
    off()
    expect(layer).toBe('l1')
    const host = new URL(`http://127.0.0.1${p}`)
    await cacheA.purge(host.href)
    await eventually(
      async () => (await request(appB).get(p).set('Cache-Control', 'only-if-cached')).status === 504,
    )
    const after = await request(appB).get(p)
    expect(after.headers['x-cache']).toBe('MISS')
    expect(after.text).toBe('v2')
    void appA
  })

  it('a POST through one instance invalidates the entry held by the other', async () => {
    const p = path('bus-post')
    let calls = 0
    const get = (_req: unknown, res: import('express').Response) => {
      calls++
      res.set('Cache-Control', 'max-age=600')
      res.send(`v${calls}`)
    }
    const appA = appWith(responseCache(kitA), (x) => x.post(p, (_q, r) => r.status(204).end()))
    const appB = appWith(responseCache(kitB), (x) => x.get(p, get))
    const stored = nextStore(kitB)
    await request(appB).get(p)
    await stored
    expect((await request(appB).get(p)).headers['x-cache']).toBe('HIT')
    await request(appA).post(p)
    await eventually(
      async () => (await request(appB).get(p).set('Cache-Control', 'only-if-cached')).status === 504,
    )
  })
})
