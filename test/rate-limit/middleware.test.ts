import express, { type RequestHandler } from 'express'
import express4 from 'express4'
import request from 'supertest'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { rateLimit } from '../../middleware/index.js'
import { createRedkit, type Redkit } from '../../src/index.js'
import { type StandaloneRedis, startRedis, uniquePrefix } from '../helpers/index.js'
import { parseList } from './sf.js'

let redis: StandaloneRedis
let kit: Redkit
let n = 0

beforeAll(async () => {
  redis = await startRedis()
  kit = createRedkit({ redis: redis.url, prefix: uniquePrefix('rl-mw'), configFile: false, env: {} })
})

afterAll(async () => {
  await kit?.close()
  await redis?.stop()
})

/** An app with the limiter on every route; each call gets its own policy name. */
function app(limiter: (name: string) => RequestHandler, trustProxy: boolean | string = false) {
  const a = express()
  a.set('trust proxy', trustProxy)
  let handled = 0
  a.use(limiter(`p${++n}`))
  a.get('/', (_req, res) => {
    handled++
    res.json({ ok: true })
  })
  return { app: a, handled: () => handled }
}

describe('rateLimit middleware', () => {
  it('sends RateLimit-Policy and RateLimit on allowed responses, then 429 problem+json with Retry-After', async () => {
    const { app: a, handled } = app((name) =>
      rateLimit(kit, {
        name,
        limits: [
          { name: 'burst', points: 2, duration: '10s' },
          { name: 'daily', points: 1000, duration: '1d' },
        ],
      }),
    )
    const first = await request(a).get('/')
    expect(first.status).toBe(200)
    expect(parseList(first.headers['ratelimit-policy'])).toEqual([
      { value: 'burst', params: { q: 2, w: 10 } },
      { value: 'daily', params: { q: 1000, w: 86400 } },
    ])
    const fields = parseList(first.headers.ratelimit)
    expect(fields.map((f) => [f.value, f.params.r])).toEqual([
      ['burst', 1],
      ['daily', 999],
    ])
    expect(fields[0]?.params.t).toBeGreaterThanOrEqual(9)
    expect(fields[0]?.params.t).toBeLessThanOrEqual(10)
    expect(first.headers['retry-after']).toBeUndefined()
    expect(first.headers['x-ratelimit-limit']).toBeUndefined()
    await request(a).get('/').expect(200)
    const rejected = await request(a).get('/')
    expect(rejected.status).toBe(429)
    expect(rejected.headers['content-type']).toMatch(/^application\/problem\+json/)
    expect(rejected.body).toMatchObject({
      type: 'https://iana.org/assignments/http-problem-types#quota-exceeded',
      status: 429,
      title: 'Too Many Requests',
      'violated-policies': ['burst'],
    })
    const retryAfter = Number(rejected.headers['retry-after'])
    expect(retryAfter).toBeGreaterThanOrEqual(1)
    expect(retryAfter).toBeLessThanOrEqual(10)
    const limits = parseList(rejected.headers.ratelimit)
    expect(limits[0]?.params).toMatchObject({ r: 0 })
    // Draft §6: Retry-After not earlier than the end of the violated limit's effective window.
    expect(retryAfter).toBeGreaterThanOrEqual(limits[0]?.params.t as number)
    expect(limits[1]?.params).toMatchObject({ r: 998 })
    expect(handled()).toBe(2)
  })

  it('answers a block shorter than the window with its own Retry-After when blockReplacesWindow is set', async () => {
    const limiter = (blockReplacesWindow: boolean) =>
      app((name) =>
        rateLimit(kit, {
          name,
          limits: [{ points: 1, duration: '1h' }],
          blockDuration: '1m',
          blockReplacesWindow,
        }),
      ).app
    for (const [replaces, seconds] of [
      [true, 60],
      [false, 3600],
    ] as const) {
      const a = limiter(replaces)
      await request(a).get('/').expect(200)
      const blocked = await request(a).get('/').expect(429)
      expect(Number(blocked.headers['retry-after'])).toBe(seconds)
    }
  })

  it('adds legacy X-RateLimit-* headers when asked', async () => {
    const { app: a } = app((name) =>
      rateLimit(kit, { name, limits: [{ points: 5, duration: '1m' }], legacyHeaders: true, headers: false }),
    )
    const res = await request(a).get('/').expect(200)
    expect(res.headers['x-ratelimit-limit']).toBe('5')
    expect(res.headers['x-ratelimit-remaining']).toBe('4')
    expect(Number(res.headers['x-ratelimit-reset'])).toBeGreaterThan(Date.now() / 1000)
    expect(res.headers.ratelimit).toBeUndefined()
  })

  it('ignores X-Forwarded-For unless trust proxy allows it', async () => {
    const { app: a } = app((name) => rateLimit(kit, { name, limits: [{ points: 1, duration: '1m' }] }))
    await request(a).get('/').set('X-Forwarded-For', '198.51.100.1').expect(200)
    // Same socket address, forged header: still the same client.
    await request(a).get('/').set('X-Forwarded-For', '198.51.100.2').expect(429)
  })

  it('keys by the forwarded client when trust proxy is set', async () => {
    const { app: a } = app(
      (name) => rateLimit(kit, { name, limits: [{ points: 1, duration: '1m' }] }),
      'loopback',
    )
    await request(a).get('/').set('X-Forwarded-For', '198.51.100.1').expect(200)
    await request(a).get('/').set('X-Forwarded-For', '198.51.100.2').expect(200)
    await request(a).get('/').set('X-Forwarded-For', '198.51.100.1').expect(429)
    // A client cannot escape by prepending addresses: only the hop the trusted proxy saw counts.
    await request(a).get('/').set('X-Forwarded-For', '203.0.113.9, 198.51.100.1').expect(429)
  })

  it('groups IPv6 clients by /64 and unwraps IPv4-mapped addresses', async () => {
    const { app: a } = app((name) => rateLimit(kit, { name, limits: [{ points: 1, duration: '1m' }] }), true)
    await request(a).get('/').set('X-Forwarded-For', '2001:db8:1:2::1').expect(200)
    await request(a).get('/').set('X-Forwarded-For', '2001:db8:1:2:ffff::99').expect(429)
    await request(a).get('/').set('X-Forwarded-For', '2001:db8:1:3::1').expect(200)
    await request(a).get('/').set('X-Forwarded-For', '192.0.2.5').expect(200)
    await request(a).get('/').set('X-Forwarded-For', '::ffff:192.0.2.5').expect(429)
  })

  it('counts each IPv6 address alone with ipv6Subnet 128', async () => {
    const { app: a } = app(
      (name) => rateLimit(kit, { name, limits: [{ points: 1, duration: '1m' }], ipv6Subnet: 128 }),
      true,
    )
    await request(a).get('/').set('X-Forwarded-For', '2001:db8:1:2::1').expect(200)
    await request(a).get('/').set('X-Forwarded-For', '2001:db8:1:2::2').expect(200)
  })

  it('puts malformed forwarded addresses into one shared bucket instead of a fresh one each', async () => {
    const { app: a } = app((name) => rateLimit(kit, { name, limits: [{ points: 2, duration: '1m' }] }), true)
    await request(a).get('/').set('X-Forwarded-For', 'foo{bar}:baz').expect(200)
    await request(a).get('/').set('X-Forwarded-For', 'not-an-ip').expect(200)
    await request(a)
      .get('/')
      .set('X-Forwarded-For', `${'z'.repeat(4000)}`)
      .expect(429)
    await request(a).get('/').set('X-Forwarded-For', '999.1.1.1, 10.0.0.1').expect(429)
  })

  it('keys by user id or by a function, falling back to the IP', async () => {
    const byUser = express()
    byUser.use((req, _res, next) => {
      const id = req.get('x-user')
      if (id) (req as typeof req & { user: { id: string } }).user = { id }
      next()
    })
    byUser.use(rateLimit(kit, { name: `p${++n}`, key: 'user', limits: [{ points: 1, duration: '1m' }] }))
    byUser.get('/', (_req, res) => res.send('ok'))
    await request(byUser).get('/').set('x-user', 'alice').expect(200)
    await request(byUser).get('/').set('x-user', 'alice').expect(429)
    await request(byUser).get('/').set('x-user', 'bob').expect(200)
    await request(byUser).get('/').expect(200)
    await request(byUser).get('/').expect(429)

    const { app: a } = app((name) =>
      rateLimit(kit, {
        name,
        key: (req) => req.get('x-api-key'),
        limits: [{ points: 1, duration: '1m' }],
      }),
    )
    await request(a).get('/').set('x-api-key', 'k:{1}').expect(200)
    await request(a).get('/').set('x-api-key', 'k:{1}').expect(429)
    await request(a).get('/').set('x-api-key', 'k').expect(200)
  })

  it('charges a function cost, and a broken cost function as 1 point, never as free', async () => {
    const { app: a } = app((name) =>
      rateLimit(kit, {
        name,
        limits: [{ points: 5, duration: '1m' }],
        cost: (req) => {
          const c = req.get('x-cost')
          return c === 'nan' ? Number.NaN : Number(c)
        },
      }),
    )
    const r1 = await request(a).get('/').set('x-cost', '3').expect(200)
    expect(parseList(r1.headers.ratelimit)[0]?.params.r).toBe(2)
    const zero = await request(a).get('/').set('x-cost', '0').expect(200)
    expect(parseList(zero.headers.ratelimit)[0]?.params.r).toBe(1)
    const negative = await request(a).get('/').set('x-cost', '-4').expect(200)
    expect(parseList(negative.headers.ratelimit)[0]?.params.r).toBe(0)
    await request(a).get('/').set('x-cost', 'nan').expect(429)
    await request(a).get('/').set('x-cost', '0').expect(429)
  })

  it('skips requests and honours allow and deny lists', async () => {
    const { app: a, handled } = app(
      (name) =>
        rateLimit(kit, {
          name,
          limits: [{ points: 1, duration: '1m' }],
          skip: (req) => req.get('x-skip') === '1',
          allow: ['10.1.0.0/16', '2001:db8:aaaa::/48'],
          deny: ['192.0.2.66', '2001:db8:dead::/48'],
        }),
      true,
    )
    for (let i = 0; i < 3; i++) {
      const r = await request(a)
        .get('/')
        .set('X-Forwarded-For', '198.51.100.7')
        .set('x-skip', '1')
        .expect(200)
      expect(r.headers.ratelimit).toBeUndefined()
    }
    for (let i = 0; i < 3; i++) await request(a).get('/').set('X-Forwarded-For', '10.1.2.3').expect(200)
    for (let i = 0; i < 3; i++)
      await request(a).get('/').set('X-Forwarded-For', '2001:db8:aaaa:1::5').expect(200)
    const denied = await request(a).get('/').set('X-Forwarded-For', '192.0.2.66').expect(403)
    expect(denied.headers['content-type']).toMatch(/problem\+json/)
    await request(a).get('/').set('X-Forwarded-For', '::ffff:192.0.2.66').expect(403)
    await request(a).get('/').set('X-Forwarded-For', '2001:db8:dead:1::1').expect(403)
    expect(handled()).toBe(9)
  })

  it('passes a failing key function to the Express error handler', async () => {
    const a = express()
    a.use(
      rateLimit(kit, {
        name: `p${++n}`,
        key: () => {
          throw new Error('key lookup failed')
        },
      }),
    )
    a.get('/', (_req, res) => res.send('ok'))
    a.use(((err, _req, res, _next) =>
      res.status(500).send((err as Error).message)) as express.ErrorRequestHandler)
    const res = await request(a).get('/')
    expect(res.status).toBe(500)
    expect(res.text).toBe('key lookup failed')
  })

  it('works on Express 4 too', async () => {
    const a = express4()
    a.use(rateLimit(kit, { name: `p${++n}`, limits: [{ name: 'default', points: 1, duration: '10s' }] }))
    a.get('/', (_req, res) => void res.send('ok'))
    const ok = await request(a).get('/').expect(200)
    expect(ok.headers['ratelimit-policy']).toBe('"default";q=1;w=10')
    const rejected = await request(a).get('/').expect(429)
    expect(rejected.headers['content-type']).toMatch(/problem\+json/)
    expect(Number(rejected.headers['retry-after'])).toBeGreaterThanOrEqual(1)
  })
})
