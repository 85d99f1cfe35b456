import express from 'express'
import request from 'supertest'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { responseCache } from '../../middleware/response-cache.js'
import type { Redkit } from '../../src/index.js'
import { type StandaloneRedis, startRedis, uniquePrefix } from '../helpers/index.js'
import { appWith, makeKit, nextStore, sleep } from './setup.js'

let redis: StandaloneRedis
let kit: Redkit
let n = 0
const path = (name: string) => `/b${++n}/${name}`

beforeAll(async () => {
  redis = await startRedis()
  kit = makeKit(redis.url, uniquePrefix('rc-bad'))
})
afterAll(async () => {
  await kit.close()
  await redis.stop()
})

/** A route answering with a response header set to `value`, counting calls. */
function withHeader(name: string, value: string) {
  let calls = 0
  const p = path(name)
  const app = appWith(responseCache(kit, { etag: false }), (a) => {
    a.set('etag', false)
    a.get(p, (_req, res) => {
      calls++
      res.set(name, value)
      res.send(`v${calls}`)
    })
  })
  return { app, p, calls: () => calls }
}

describe('malformed response headers are passed through uncached', () => {
  for (const [name, value] of [
    ['Cache-Control', 'max-age=abc'],
    ['Cache-Control', 'max-age=60, max-age=10'],
    ['Cache-Control', 's-maxage=-5'],
    ['Vary', 'Accept-Language, bad header'],
    ['Vary', 'Accept, *'],
    ['Expires', 'not a date'],
  ] as const) {
    it(`${name}: ${value}`, async () => {
      const r = withHeader(name, value)
      const first = await request(r.app).get(r.p)
      expect(first.status).toBe(200)
      await sleep(50)
      const second = await request(r.app).get(r.p)
      expect([second.status, second.text]).toEqual([200, 'v2'])
    })
  }

  it('quoted commas in Cache-Control do not split directives', async () => {
    const r = withHeader('Cache-Control', 'max-age=60, community="a, b, max-age=0"')
    const stored = nextStore(kit)
    await request(r.app).get(r.p)
    await stored
    expect((await request(r.app).get(r.p)).headers['x-cache']).toBe('HIT')
  })
})

describe('malformed request headers are served correctly', () => {
  async function warmed() {
    let calls = 0
    const p = path('req')
    const app = appWith(responseCache(kit), (a) =>
      a.get(p, (_req, res) => {
        calls++
        res.set('Cache-Control', 'max-age=60')
        res.set('Last-Modified', new Date(Date.now() - 60_000).toUTCString())
        res.send('body')
      }),
    )
    const stored = nextStore(kit)
    await request(app).get(p)
    await stored
    return { app, p, calls: () => calls }
  }

  for (const [name, value] of [
    ['Cache-Control', 'max-age=, ,,=,"'],
    ['Cache-Control', 'max-stale=abc, min-fresh=-1'],
    ['If-None-Match', 'garbage,,"'],
    ['If-None-Match', 'W/'],
    ['If-Modified-Since', 'yesterday'],
    ['If-Modified-Since', 'x'.repeat(5000)],
    ['Accept-Encoding', 'x'.repeat(8000)],
  ] as const) {
    it(`${name}: ${value.slice(0, 30)}`, async () => {
      const w = await warmed()
      const res = await request(w.app).get(w.p).set(name, value)
      expect([res.status, res.text]).toEqual([200, 'body'])
      expect(w.calls()).toBeLessThanOrEqual(2)
      const clean = await request(w.app).get(w.p)
      expect([clean.status, clean.text, clean.headers['x-cache']]).toEqual([200, 'body', 'HIT'])
    })
  }
})

describe('long inputs', () => {
  it('very long URLs get their own short keys and never collide', async () => {
    let calls = 0
    const p = path('long')
    const app = appWith(responseCache(kit), (a) =>
      a.get(p, (req, res) => {
        calls++
        res.send(String(req.query.q).slice(-10))
      }),
    )
    const q1 = `${'a'.repeat(6000)}1111111111`
    const q2 = `${'a'.repeat(6000)}2222222222`
    const stored = nextStore(kit)
    expect((await request(app).get(`${p}?q=${q1}`)).text).toBe('1111111111')
    await stored
    expect((await request(app).get(`${p}?q=${q2}`)).text).toBe('2222222222')
    const hit = await request(app).get(`${p}?q=${q1}`)
    expect([hit.text, hit.headers['x-cache']]).toEqual(['1111111111', 'HIT'])
    expect(calls).toBe(2)
  })

  it('long header values selected by Vary make distinct variants', async () => {
    const p = path('longvary')
    const app = appWith(responseCache(kit), (a) =>
      a.get(p, (req, res) => {
        res.set('Vary', 'X-Long')
        res.send(String(req.get('x-long')).slice(-4))
      }),
    )
    const one = `${'z'.repeat(7000)}0001`
    const two = `${'z'.repeat(7000)}0002`
    const stored = nextStore(kit, 2)
    await request(app).get(p).set('X-Long', one)
    await stored
    expect((await request(app).get(p).set('X-Long', two)).text).toBe('0002')
    const hit = await request(app).get(p).set('X-Long', one)
    expect([hit.text, hit.headers['x-cache']]).toEqual(['0001', 'HIT'])
  })
})

describe('forwarded host', () => {
  it('without trust proxy, X-Forwarded-Host neither changes the key nor poisons the entry', async () => {
    const p = path('xfh')
    const app = appWith(responseCache(kit), (a) => a.get(p, (req, res) => res.send(`host=${req.hostname}`)))
    const stored = nextStore(kit)
    const evil = await request(app).get(p).set('X-Forwarded-Host', 'evil.example')
    expect(evil.text).toBe('host=127.0.0.1')
    await stored
    const clean = await request(app).get(p)
    expect([clean.text, clean.headers['x-cache']]).toEqual(['host=127.0.0.1', 'HIT'])
  })

  it('with trust proxy, each forwarded host gets its own entry', async () => {
    const p = path('xfh-trusted')
    const app = express()
    app.set('trust proxy', true)
    app.use(responseCache(kit))
    app.get(p, (req, res) => res.send(`host=${req.hostname}`))
    const stored = nextStore(kit)
    expect((await request(app).get(p).set('X-Forwarded-Host', 'evil.example')).text).toBe('host=evil.example')
    await stored
    const clean = await request(app).get(p)
    expect([clean.text, clean.headers['x-cache']]).toEqual(['host=127.0.0.1', 'MISS'])
  })
})

describe('Host header', () => {
  function shop() {
    let calls = 0
    const cache = responseCache(kit)
    const app = express()
    app.use(cache)
    app.get('/api/products/42', (_req, res) => {
      calls++
      res.set('Cache-Control', 'max-age=600')
      res.send(`product 42, v${calls}`)
    })
    app.post('/42', (_req, res) => res.status(204).end())
    return { app, cache, calls: () => calls }
  }

  it('a Host with a path in it is passed through uncached and cannot poison another URL', async () => {
    const { app } = shop()
    const reasons: string[] = []
    const off = kit.on('cache:bypass', (e) => reasons.push(e.reason))
    const evil = await request(app).get('/42').set('Host', 'shop.example/api/products')
    off()
    await sleep(50)
    const real = await request(app).get('/api/products/42').set('Host', 'shop.example')
    expect([real.status, real.headers['x-cache'], real.text]).toEqual([200, 'MISS', 'product 42, v1'])
    expect([evil.status, evil.headers['x-cache']]).toEqual([404, 'BYPASS'])
    expect(reasons).toContain('invalid-host')
  })

  it('an unsafe request with an invalid Host invalidates nothing', async () => {
    const { app, calls } = shop()
    const stored = nextStore(kit)
    await request(app).get('/api/products/42').set('Host', 'shop2.example')
    await stored
    const post = await request(app).post('/42').set('Host', 'shop2.example/api/products')
    expect(post.status).toBe(204)
    await sleep(50)
    const hit = await request(app).get('/api/products/42').set('Host', 'shop2.example')
    expect([hit.headers['x-cache'], calls()]).toEqual(['HIT', 1])
  })

  for (const host of ['shop.example:80/api', 'shop example', 'shop.example:8x', '[::1', 'a@b.example']) {
    it(`Host ${JSON.stringify(host)} is passed through uncached`, async () => {
      const p = path('host')
      let calls = 0
      const app = appWith(responseCache(kit), (a) =>
        a.get(p, (_req, res) => {
          calls++
          res.send(`v${calls}`)
        }),
      )
      const first = await request(app).get(p).set('Host', host)
      expect([first.status, first.headers['x-cache']]).toEqual([200, 'BYPASS'])
      await sleep(50)
      const second = await request(app).get(p).set('Host', host)
      expect([second.text, second.headers['x-cache']]).toEqual(['v2', 'BYPASS'])
    })
  }

  for (const host of ['shop.example:8080', '127.0.0.1', '[::1]:3000', 'xn--bcher-kva.example']) {
    it(`Host ${JSON.stringify(host)} is cached`, async () => {
      const p = path('host-ok')
      const app = appWith(responseCache(kit), (a) => a.get(p, (_req, res) => res.send('ok')))
      const stored = nextStore(kit)
      await request(app).get(p).set('Host', host)
      await stored
      expect((await request(app).get(p).set('Host', host)).headers['x-cache']).toBe('HIT')
    })
  }
})

describe('scheme', () => {
  function redirecting() {
    const p = path('scheme')
    const cache = responseCache(kit)
    const app = express()
    app.set('trust proxy', true)
    app.use(cache)
    app.get(p, (req, res) => {
      if (!req.secure) return res.redirect(301, `https://${req.hostname}${req.originalUrl}`)
      res.send(`secure ${req.hostname}`)
    })
    return { app, cache, p }
  }

  it('an http redirect to https is never replayed to https clients', async () => {
    const { app, p } = redirecting()
    const stored = nextStore(kit)
    const plain = await request(app).get(p).set('Host', 'shop.example').set('X-Forwarded-Proto', 'http')
    expect(plain.status).toBe(301)
    await stored
    const again = await request(app).get(p).set('Host', 'shop.example').set('X-Forwarded-Proto', 'http')
    expect([again.status, again.headers['x-cache']]).toEqual([301, 'HIT'])
    const secure = await request(app).get(p).set('Host', 'shop.example').set('X-Forwarded-Proto', 'https')
    expect([secure.status, secure.text]).toEqual([200, 'secure shop.example'])
  })

  it('purge(url) removes the entries of both schemes', async () => {
    const { app, cache, p } = redirecting()
    const stored = nextStore(kit, 2)
    await request(app).get(p).set('Host', 'shop.example').set('X-Forwarded-Proto', 'http')
    await request(app).get(p).set('Host', 'shop.example').set('X-Forwarded-Proto', 'https')
    await stored
    await cache.purge(`https://shop.example${p}`)
    for (const proto of ['http', 'https']) {
      const res = await request(app).get(p).set('Host', 'shop.example').set('X-Forwarded-Proto', proto)
      expect(res.headers['x-cache']).toBe('MISS')
    }
  })
})
