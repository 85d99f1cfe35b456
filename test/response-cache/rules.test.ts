import type { Express } from 'express'
import request from 'supertest'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { responseCache } from '../../middleware/response-cache.js'
import type { Redkit } from '../../src/index.js'
import { type StandaloneRedis, startRedis, uniquePrefix } from '../helpers/index.js'
import { appWith, makeKit, nextStore, sleep } from './setup.js'

let redis: StandaloneRedis
let kit: Redkit
let n = 0
/** A fresh path per test, so tests never share entries. */
const path = (name: string) => `/t${++n}/${name}`

beforeAll(async () => {
  redis = await startRedis()
  kit = makeKit(redis.url, uniquePrefix('rc-rules'))
})
afterAll(async () => {
  await kit.close()
  await redis.stop()
})

function counted(
  handler: (req: import('express').Request, res: import('express').Response, calls: number) => void,
): { calls: () => number; route: import('express').RequestHandler } {
  let calls = 0
  return {
    calls: () => calls,
    route: (req, res) => {
      calls++
      handler(req, res, calls)
    },
  }
}

describe('storing and serving', () => {
  it('serves the second GET from the cache with Age and X-Cache: HIT', async () => {
    const p = path('basic')
    const h = counted((_req, res, calls) => res.json({ calls }))
    const app = appWith(responseCache(kit), (a) => a.get(p, h.route))
    const stored = nextStore(kit)
    const first = await request(app).get(p)
    expect(first.headers['x-cache']).toBe('MISS')
    await stored
    const second = await request(app).get(p)
    expect(second.status).toBe(200)
    expect(second.headers['x-cache']).toBe('HIT')
    expect(second.body).toEqual({ calls: 1 })
    expect(second.headers.age).toMatch(/^\d+$/)
    expect(second.headers['content-type']).toMatch(/application\/json/)
    expect(h.calls()).toBe(1)
  })

  it('never rewrites the app Cache-Control header and honours max-age expiry', async () => {
    const p = path('maxage')
    const h = counted((_req, res, calls) => {
      res.set('Cache-Control', 'max-age=1')
      res.send(`v${calls}`)
    })
    const app = appWith(responseCache(kit, { ttl: '1h' }), (a) => a.get(p, h.route))
    const stored = nextStore(kit)
    await request(app).get(p)
    await stored
    const hit = await request(app).get(p)
    expect(hit.headers['cache-control']).toBe('max-age=1')
    expect(hit.text).toBe('v1')
    await sleep(1200)
    const after = await request(app).get(p)
    expect(after.headers['x-cache']).toBe('MISS')
    expect(h.calls()).toBe(2)
  })

  it('does not store no-store, private, or Set-Cookie responses', async () => {
    for (const [name, set] of [
      ['nostore', (res: import('express').Response) => res.set('Cache-Control', 'no-store')],
      ['private', (res: import('express').Response) => res.set('Cache-Control', 'private, max-age=60')],
      ['cookie', (res: import('express').Response) => res.cookie('sid', 'secret')],
    ] as const) {
      const p = path(name)
      const h = counted((_req, res, calls) => {
        set(res)
        res.send(`v${calls}`)
      })
      const app = appWith(responseCache(kit), (a) => a.get(p, h.route))
      await request(app).get(p)
      await sleep(50)
      const second = await request(app).get(p)
      expect(second.text, name).toBe('v2')
      expect(second.headers['x-cache'], name).toBe('MISS')
    }
  })

  it('does not replay a Set-Cookie response even to a max-stale request', async () => {
    const p = path('cookie-maxstale')
    const h = counted((_req, res, calls) => {
      res.set('Cache-Control', 'public, max-age=0')
      res.cookie('sid', `user-${calls}`)
      res.send('x')
    })
    const app = appWith(responseCache(kit), (a) => a.get(p, h.route))
    await request(app).get(p)
    await sleep(50)
    const second = await request(app).get(p).set('Cache-Control', 'max-stale')
    expect(second.headers['set-cookie']?.[0]).toMatch(/user-2/)
    expect(h.calls()).toBe(2)
  })

  it('uses the ttl option only where the response gives no freshness', async () => {
    const p = path('ttl')
    const h = counted((_req, res, calls) => res.send(`v${calls}`))
    const app = appWith(responseCache(kit, { ttl: 500 }), (a) => a.get(p, h.route))
    const stored = nextStore(kit)
    await request(app).get(p)
    await stored
    expect((await request(app).get(p)).headers['x-cache']).toBe('HIT')
    await sleep(700)
    expect((await request(app).get(p)).text).toBe('v2')
  })

  it('forceTtl replaces the response freshness but not its header', async () => {
    const p = path('force')
    const h = counted((_req, res, calls) => {
      res.set('Cache-Control', 'max-age=0')
      res.send(`v${calls}`)
    })
    const app = appWith(responseCache(kit, { ttl: '1m', forceTtl: true, etag: false }), (a) =>
      a.get(p, h.route),
    )
    const stored = nextStore(kit)
    await request(app).get(p)
    await stored
    const hit = await request(app).get(p)
    expect(hit.headers['x-cache']).toBe('HIT')
    expect(hit.headers['cache-control']).toBe('max-age=0')
  })

  it('does not store a 500, a 302 without freshness, or a response over maxSize', async () => {
    const p1 = path('500')
    const p2 = path('302')
    const p3 = path('big')
    const h = counted((req, res, calls) => {
      if (req.path === p1) res.status(500).send(`e${calls}`)
      else if (req.path === p2) res.redirect(`/elsewhere?${calls}`)
      else {
        // Streamed in chunks, more than maxSize in total.
        for (let i = 0; i < 5; i++) res.write(Buffer.alloc(300, 65 + i))
        res.end(String(calls))
      }
    })
    const app = appWith(responseCache(kit, { maxSize: 1000 }), (a) => a.get([p1, p2, p3], h.route))
    for (const p of [p1, p2, p3]) {
      const first = await request(app).get(p)
      await sleep(50)
      const second = await request(app).get(p)
      expect(second.headers['x-cache'], p).toBe('MISS')
      if (p === p3) {
        expect(first.text.length).toBe(1501)
        expect(second.text.endsWith(String(h.calls()))).toBe(true)
      }
    }
    expect(h.calls()).toBe(6)
  })

  it('caches a streamed response written in chunks, binary-safe', async () => {
    const p = path('binary')
    const bytes = Buffer.from(Array.from({ length: 3000 }, (_, i) => (i * 7) % 256))
    const h = counted((_req, res) => {
      res.type('application/octet-stream')
      res.write(bytes.subarray(0, 1000))
      res.write(bytes.subarray(1000, 2000))
      res.end(bytes.subarray(2000))
    })
    const app = appWith(responseCache(kit), (a) => a.get(p, h.route))
    const stored = nextStore(kit)
    await request(app).get(p)
    await stored
    const hit = await request(app)
      .get(p)
      .buffer(true)
      .parse((res, cb) => {
        const chunks: Buffer[] = []
        res.on('data', (c: Buffer) => chunks.push(c))
        res.on('end', () => cb(null, Buffer.concat(chunks)))
      })
    expect(hit.headers['x-cache']).toBe('HIT')
    expect(Buffer.compare(hit.body as Buffer, bytes)).toBe(0)
    expect(hit.headers['content-length']).toBe('3000')
    expect(h.calls()).toBe(1)
  })

  it('answers HEAD from the GET entry, without a body', async () => {
    const p = path('head')
    const h = counted((_req, res) => res.send('hello head'))
    const app = appWith(responseCache(kit), (a) => a.get(p, h.route))
    const stored = nextStore(kit)
    await request(app).get(p)
    await stored
    const head = await request(app).head(p)
    expect(head.headers['x-cache']).toBe('HIT')
    expect(head.headers['content-length']).toBe('10')
    expect(head.text ?? '').toBe('')
    expect(h.calls()).toBe(1)
  })

  it('lets statusHeader rename or turn off the cache-status header', async () => {
    const p = path('status')
    const app = appWith(responseCache(kit, { statusHeader: 'Cache-Status-X' }), (a) =>
      a.get(p, (_q, r) => r.send('a')),
    )
    expect((await request(app).get(p)).headers['cache-status-x']).toBe('MISS')
    const p2 = path('nostatus')
    const off = appWith(responseCache(kit, { statusHeader: false }), (a) => a.get(p2, (_q, r) => r.send('a')))
    expect((await request(off).get(p2)).headers['x-cache']).toBeUndefined()
  })
})

describe('request Cache-Control', () => {
  async function warm(p: string, cc = 'max-age=60') {
    const h = counted((_req, res, calls) => {
      res.set('Cache-Control', cc)
      res.send(`v${calls}`)
    })
    const app = appWith(responseCache(kit, { etag: false }), (a) => a.get(p, h.route))
    const stored = nextStore(kit)
    await request(app).get(p)
    await stored
    return { app, h }
  }

  it('no-cache goes to the origin', async () => {
    const p = path('rq-nocache')
    const { app, h } = await warm(p)
    const res = await request(app).get(p).set('Cache-Control', 'no-cache')
    expect(res.text).toBe('v2')
    expect(h.calls()).toBe(2)
  })

  it('Pragma: no-cache without Cache-Control goes to the origin', async () => {
    const p = path('rq-pragma')
    const { app, h } = await warm(p)
    await request(app).get(p).set('Pragma', 'no-cache')
    expect(h.calls()).toBe(2)
  })

  it('no-store is served from cache but not stored', async () => {
    const p = path('rq-nostore')
    const { app, h } = await warm(p)
    const res = await request(app).get(p).set('Cache-Control', 'no-store')
    expect(res.headers['x-cache']).toBe('HIT')
    expect(h.calls()).toBe(1)
  })

  it('max-age and min-fresh send older or soon-stale entries to the origin', async () => {
    const p = path('rq-maxage')
    const { app, h } = await warm(p)
    await sleep(1100)
    expect((await request(app).get(p).set('Cache-Control', 'max-age=0')).text).toBe('v2')
    expect((await request(app).get(p).set('Cache-Control', 'min-fresh=3600')).headers['x-cache']).toBe('MISS')
    expect(h.calls()).toBe(3)
  })

  it('max-stale accepts a stale entry unless it must be revalidated', async () => {
    const p = path('rq-maxstale')
    const { app } = await warm(p, 'max-age=1, stale-if-error=60')
    await sleep(1200)
    const res = await request(app).get(p).set('Cache-Control', 'max-stale=60')
    expect(res.headers['x-cache']).toBe('STALE')
    expect(res.text).toBe('v1')

    const p2 = path('rq-maxstale-mr')
    const strict = await warm(p2, 'max-age=1, must-revalidate')
    // must-revalidate with no validator: kept only while fresh, so nothing stale can be served.
    await sleep(1200)
    const res2 = await request(strict.app).get(p2).set('Cache-Control', 'max-stale')
    expect(res2.text).toBe('v2')
  })

  it('only-if-cached answers 504 when nothing is stored, and the entry when it is', async () => {
    const p = path('rq-oic')
    const h = counted((_req, res) => res.send('x'))
    const app = appWith(responseCache(kit), (a) => a.get(p, h.route))
    const miss = await request(app).get(p).set('Cache-Control', 'only-if-cached')
    expect(miss.status).toBe(504)
    expect(h.calls()).toBe(0)
    const stored = nextStore(kit)
    await request(app).get(p)
    await stored
    const hit = await request(app).get(p).set('Cache-Control', 'only-if-cached')
    expect(hit.status).toBe(200)
  })
})

describe('Vary', () => {
  it('stores one entry per variant, selected by the request values', async () => {
    const p = path('vary')
    const h = counted((req, res) => {
      res.set('Vary', 'Accept-Language')
      res.send(`lang=${req.get('accept-language') ?? 'none'}`)
    })
    const app = appWith(responseCache(kit), (a) => a.get(p, h.route))
    let stored = nextStore(kit, 2)
    expect((await request(app).get(p).set('Accept-Language', 'fr')).text).toBe('lang=fr')
    await stored
    stored = nextStore(kit, 2)
    expect((await request(app).get(p).set('Accept-Language', 'de')).text).toBe('lang=de')
    await stored
    const fr = await request(app).get(p).set('Accept-Language', 'fr')
    const de = await request(app).get(p).set('Accept-Language', 'de')
    expect([fr.text, fr.headers['x-cache']]).toEqual(['lang=fr', 'HIT'])
    expect([de.text, de.headers['x-cache']]).toEqual(['lang=de', 'HIT'])
    const none = await request(app).get(p)
    expect(none.text).toBe('lang=none')
    expect(h.calls()).toBe(3)
  })

  it('never serves a Vary: * response from cache', async () => {
    const p = path('varystar')
    const h = counted((_req, res, calls) => {
      res.set('Vary', '*')
      res.send(`v${calls}`)
    })
    const app = appWith(responseCache(kit), (a) => a.get(p, h.route))
    await request(app).get(p)
    await sleep(50)
    expect((await request(app).get(p)).text).toBe('v2')
  })
})

describe('Authorization', () => {
  it('does not serve a stored response to an authenticated request unless it is public', async () => {
    const p = path('auth')
    const h = counted((_req, res, calls) => res.send(`v${calls}`))
    const app = appWith(responseCache(kit), (a) => a.get(p, h.route))
    const stored = nextStore(kit)
    await request(app).get(p)
    await stored
    const authed = await request(app).get(p).set('Authorization', 'Bearer x')
    expect(authed.text).toBe('v2')
    expect(authed.headers['x-cache']).toBe('BYPASS')

    const p2 = path('auth-public')
    const pub = counted((_req, res, calls) => {
      res.set('Cache-Control', 'public, max-age=60')
      res.send(`v${calls}`)
    })
    const app2 = appWith(responseCache(kit), (a) => a.get(p2, pub.route))
    const stored2 = nextStore(kit)
    await request(app2).get(p2).set('Authorization', 'Bearer x')
    await stored2
    const hit = await request(app2).get(p2).set('Authorization', 'Bearer y')
    expect(hit.headers['x-cache']).toBe('HIT')
  })

  it('does not store the response to an authenticated request without public or s-maxage', async () => {
    const p = path('auth-nostore')
    const h = counted((_req, res, calls) => {
      res.set('Cache-Control', 'max-age=60')
      res.send(`secret-${calls}`)
    })
    const app = appWith(responseCache(kit), (a) => a.get(p, h.route))
    await request(app).get(p).set('Authorization', 'Bearer alice')
    await sleep(50)
    expect((await request(app).get(p)).text).toBe('secret-2')
  })
})

describe('validators', () => {
  it('adds a strong ETag when the app sets none, and answers If-None-Match with 304', async () => {
    const p = path('etag')
    const h = counted((_req, res) => res.send('same body'))
    const app = appWith(responseCache(kit), (a) => {
      a.set('etag', false)
      a.get(p, h.route)
    })
    const stored = nextStore(kit)
    const first = await request(app).get(p)
    await stored
    const etag = first.headers.etag as string
    expect(etag).toMatch(/^"[\w-]+"$/)
    const hit = await request(app).get(p)
    expect(hit.headers.etag).toBe(etag)
    const notModified = await request(app).get(p).set('If-None-Match', `"nope", ${etag}`)
    expect(notModified.status).toBe(304)
    expect(notModified.headers['x-cache']).toBe('HIT')
    expect(notModified.headers.etag).toBe(etag)
    expect((await request(app).get(p).set('If-None-Match', '"nope"')).status).toBe(200)
    expect((await request(app).get(p).set('If-None-Match', '*')).status).toBe(304)
    expect(h.calls()).toBe(1)
  })

  it('answers If-Modified-Since with 304 from cache', async () => {
    const p = path('ims')
    const lm = new Date(Date.now() - 3600_000).toUTCString()
    const h = counted((_req, res) => {
      res.set('Last-Modified', lm)
      res.set('Cache-Control', 'max-age=60')
      res.send('dated')
    })
    const app = appWith(responseCache(kit), (a) => {
      a.set('etag', false)
      a.get(p, h.route)
    })
    const stored = nextStore(kit)
    await request(app).get(p)
    await stored
    expect((await request(app).get(p).set('If-Modified-Since', new Date().toUTCString())).status).toBe(304)
    expect((await request(app).get(p).set('If-Modified-Since', new Date(0).toUTCString())).status).toBe(200)
    expect(h.calls()).toBe(1)
  })

  it('revalidates a stale entry with a conditional request instead of refetching', async () => {
    const p = path('revalidate')
    let full = 0
    let conditional = 0
    const app = appWith(responseCache(kit), (a) => {
      a.get(p, (req, res) => {
        res.set('Cache-Control', 'max-age=1')
        res.set('ETag', '"v1"')
        if (req.get('if-none-match') === '"v1"') {
          conditional++
          res.status(304).end()
          return
        }
        full++
        res.send('body v1')
      })
    })
    const stored = nextStore(kit)
    await request(app).get(p)
    await stored
    await sleep(1100)
    const refreshed = nextStore(kit)
    const res = await request(app).get(p)
    expect(res.status).toBe(200)
    expect(res.text).toBe('body v1')
    expect(res.headers['x-cache']).toBe('HIT')
    await refreshed
    expect([full, conditional]).toEqual([1, 1])
    // Fresh again after the 304.
    expect((await request(app).get(p)).headers['x-cache']).toBe('HIT')
    expect([full, conditional]).toEqual([1, 1])
  })
})

describe('response no-cache', () => {
  it('stores a no-cache response with a validator and revalidates it before every use', async () => {
    const p = path('res-nocache')
    let full = 0
    let conditional = 0
    const app = appWith(responseCache(kit), (a) =>
      a.get(p, (req, res) => {
        res.set('Cache-Control', 'no-cache')
        res.set('ETag', '"nc"')
        if (req.get('if-none-match') === '"nc"') {
          conditional++
          res.status(304).end()
          return
        }
        full++
        res.send('validated body')
      }),
    )
    const stored = nextStore(kit)
    await request(app).get(p)
    await stored
    for (let i = 0; i < 3; i++) {
      const res = await request(app).get(p)
      expect([res.status, res.text]).toEqual([200, 'validated body'])
    }
    expect([full, conditional]).toEqual([1, 3])
  })
})

describe('invalidation', () => {
  it('a successful POST invalidates the target URI and its Location', async () => {
    const p = path('unsafe')
    const other = path('unsafe-other')
    const h = counted((_req, res, calls) => res.send(`v${calls}`))
    const app: Express = appWith(responseCache(kit), (a) => {
      a.get([p, other], h.route)
      a.post(p, (_req, res) => res.location(other).status(201).send('created'))
      a.post(`${p}/fail`, (_req, res) => res.status(500).send('no'))
    })
    let stored = nextStore(kit)
    await request(app).get(p)
    await stored
    stored = nextStore(kit)
    await request(app).get(other)
    await stored
    expect(h.calls()).toBe(2)
    await request(app).post(p).send({})
    await sleep(100)
    expect((await request(app).get(p)).headers['x-cache']).toBe('MISS')
    expect((await request(app).get(other)).headers['x-cache']).toBe('MISS')
  })

  it('a PUT invalidates its Content-Location; other hosts and failed requests invalidate nothing', async () => {
    const p = path('put')
    const view = path('put-view')
    const h = counted((_req, res, calls) => res.send(`v${calls}`))
    const app = appWith(responseCache(kit), (a) => {
      a.get([p, view], h.route)
      a.put(p, (_req, res) =>
        res.set('Content-Location', `http://elsewhere.example${view}`).status(200).send('ok'),
      )
      a.patch(p, (_req, res) => res.set('Content-Location', view).status(200).send('ok'))
      a.delete(p, (_req, res) => res.status(404).send('no'))
    })
    const stored = nextStore(kit, 2)
    await request(app).get(p)
    await request(app).get(view)
    await stored
    await request(app).delete(p)
    await sleep(100)
    expect((await request(app).get(p)).headers['x-cache']).toBe('HIT')
    await request(app).put(p)
    await sleep(100)
    expect((await request(app).get(view)).headers['x-cache']).toBe('HIT')
    await request(app).patch(p)
    await sleep(100)
    expect((await request(app).get(view)).headers['x-cache']).toBe('MISS')
  })

  it('a HEAD miss passes through without storing anything', async () => {
    const p = path('head-miss')
    const h = counted((_req, res) => res.send('body'))
    const app = appWith(responseCache(kit), (a) => a.get(p, h.route))
    const head = await request(app).head(p)
    expect(head.headers['x-cache']).toBe('MISS')
    await sleep(50)
    expect((await request(app).get(p)).headers['x-cache']).toBe('MISS')
    expect(h.calls()).toBe(2)
  })

  it('tags from the option and from Surrogate-Key / Cache-Tag headers, which never leave', async () => {
    const p1 = path('tag1')
    const p2 = path('tag2')
    const h = counted((req, res, calls) => {
      if (req.path === p1) res.set('Surrogate-Key', 'products product-1')
      else res.set('Cache-Tag', 'products,other')
      res.send(`v${calls}`)
    })
    const cache = responseCache(kit, { tags: (req) => [`path:${req.path}`] })
    const app = appWith(cache, (a) => a.get([p1, p2], h.route))
    let stored = nextStore(kit)
    const first = await request(app).get(p1)
    expect(first.headers['surrogate-key']).toBeUndefined()
    await stored
    stored = nextStore(kit)
    const second = await request(app).get(p2)
    expect(second.headers['cache-tag']).toBeUndefined()
    await stored
    expect((await request(app).get(p1)).headers['surrogate-key']).toBeUndefined()
    await kit.cache.invalidateTags(['products'])
    expect((await request(app).get(p1)).headers['x-cache']).toBe('MISS')
    expect((await request(app).get(p2)).headers['x-cache']).toBe('MISS')
    await sleep(100)
    await cache.invalidateTags([`path:${p1}`])
    expect((await request(app).get(p1)).headers['x-cache']).toBe('MISS')
    expect((await request(app).get(p2)).headers['x-cache']).toBe('HIT')
  })

  it('purge(url) removes every variant of a URL', async () => {
    const p = path('purge')
    const h = counted((req, res, calls) => {
      res.set('Vary', 'Accept')
      res.send(`v${calls}-${req.get('accept')}`)
    })
    const cache = responseCache(kit)
    const app = appWith(cache, (a) => a.get(p, h.route))
    let stored = nextStore(kit, 2)
    await request(app).get(p).set('Accept', 'text/a')
    await stored
    stored = nextStore(kit, 2)
    await request(app).get(p).set('Accept', 'text/b')
    await stored
    await cache.purge(`http://127.0.0.1${p}`)
    expect((await request(app).get(p).set('Accept', 'text/a')).headers['x-cache']).toBe('MISS')
    expect((await request(app).get(p).set('Accept', 'text/b')).headers['x-cache']).toBe('MISS')
    await expect(cache.purge(p)).rejects.toThrow(/absolute/)
  })

  it('the key option replaces the URL key; query options sort and filter parameters', async () => {
    const p = path('key')
    const h = counted((_req, res, calls) => res.send(`v${calls}`))
    const app = appWith(responseCache(kit, { query: { sort: true, exclude: ['utm_source'] } }), (a) =>
      a.get(p, h.route),
    )
    const stored = nextStore(kit)
    await request(app).get(`${p}?a=1&b=2`)
    await stored
    expect((await request(app).get(`${p}?b=2&a=1&utm_source=x`)).headers['x-cache']).toBe('HIT')
    expect((await request(app).get(`${p}?b=3&a=1`)).headers['x-cache']).toBe('MISS')

    const p2 = path('custom')
    const app2 = appWith(responseCache(kit, { key: (req) => req.path }), (a) => a.get(p2, h.route))
    const stored2 = nextStore(kit)
    await request(app2).get(`${p2}?x=1`)
    await stored2
    expect((await request(app2).get(`${p2}?x=2`)).headers['x-cache']).toBe('HIT')
  })
})

describe('events', () => {
  it('emits miss, store, hit with cache: response', async () => {
    const p = path('events')
    const seen: string[] = []
    const offs = (['cache:miss', 'cache:store', 'cache:hit'] as const).map((name) =>
      kit.on(name, (e) => {
        if (e.cache === 'response') seen.push(name)
      }),
    )
    const app = appWith(responseCache(kit), (a) => a.get(p, (_q, r) => r.send('e')))
    const stored = nextStore(kit)
    await request(app).get(p)
    await stored
    await request(app).get(p)
    for (const off of offs) off()
    expect(seen).toEqual(['cache:miss', 'cache:store', 'cache:hit'])
  })

  it('rejects invalid options at creation', () => {
    expect(() => responseCache(kit, { ttl: 'soon' })).toThrow(/ttl/)
    expect(() => responseCache(kit, { maxSize: -1 })).toThrow(/maxSize/)
    expect(() => responseCache(kit, { statusHeader: 'bad header' })).toThrow(/statusHeader/)
  })
})
