import express from 'express'
import express4 from 'express4'
import { Redis } from 'ioredis'
import request from 'supertest'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { analytics, routePattern } from '../../middleware/analytics.js'
import { metrics } from '../../middleware/metrics.js'
import { ConfigError, createRedkit, loadPromClient, type Redkit } from '../../src/index.js'
import { type StandaloneRedis, startRedis, uniquePrefix } from '../helpers/index.js'

let redis: StandaloneRedis
let raw: Redis
const kits: Redkit[] = []

function newKit(prefix = uniquePrefix('analytics-mw')): Redkit {
  const kit = createRedkit({ redis: redis.url, prefix, configFile: false, env: {} })
  kit.analytics.configure({ flushInterval: '1h', maxBatch: 1_000_000 })
  kits.push(kit)
  return kit
}

function app(kit: Redkit, options: Parameters<typeof analytics>[1] = {}) {
  const a = express()
  a.set('trust proxy', true)
  a.use(analytics(kit, options))
  a.get('/', (_req, res) => res.send('home'))
  a.get('/products/:id', (req, res) => res.json({ id: req.params.id }))
  a.post('/products', (_req, res) => res.status(201).end())
  a.get('/boom', (_req, res) => res.status(500).end())
  const users = express.Router()
  users.get('/:userId/posts/:postId', (_req, res) => res.send('post'))
  users.get('/', (_req, res) => res.send('users'))
  a.use('/users', users)
  const nested = express.Router({ mergeParams: true })
  nested.get('/items', (_req, res) => res.send('items'))
  a.use('/shops/:shop', nested)
  return a
}

beforeAll(async () => {
  redis = await startRedis()
  raw = new Redis(redis.url)
})
afterAll(async () => {
  await Promise.all(kits.map((k) => k.close()))
  raw.disconnect()
  await redis.stop()
})

describe('analytics middleware', () => {
  it('counts by route pattern, never the raw URL, with unmatched requests in one bucket', async () => {
    const kit = newKit()
    const server = app(kit)
    for (let i = 0; i < 300; i++) await request(server).get(`/products/${i}?ref=${i}`).expect(200)
    for (let i = 0; i < 50; i++) await request(server).get(`/random/${i}/${Math.random()}`).expect(404)
    await request(server).get('/users/7/posts/9').expect(200)
    await request(server).get('/users').expect(200)
    await request(server).get('/shops/acme-42/items').expect(200)
    await request(server).get('/shops/1234/items').expect(200)
    await kit.analytics.flush()
    const routes = await kit.analytics.topRoutes({ limit: 100 })
    expect(routes).toEqual([
      { path: 'GET /products/:id', count: 300 },
      { path: 'GET (unmatched)', count: 50 },
      { path: 'GET /shops/:id/items', count: 1 },
      { path: 'GET /shops/acme-42/items', count: 1 },
      { path: 'GET /users', count: 1 },
      { path: 'GET /users/:userId/posts/:postId', count: 1 },
    ])
    // Every distinct key the middleware wrote: a handful, whatever the number of URLs.
    const keys = await raw.keys(`${kit.prefix}:*`)
    expect(keys.length).toBeLessThan(40)
  })

  it('counts methods, status classes and latency, and page views for successful GETs only', async () => {
    const kit = newKit()
    const server = app(kit)
    await request(server).get('/').expect(200)
    await request(server).get('/products/1').expect(200)
    await request(server).post('/products').expect(201)
    await request(server).get('/boom').expect(500)
    await request(server).get('/nope').expect(404)
    await kit.analytics.flush()
    const { totals } = await kit.analytics.stats()
    expect(totals).toMatchObject({
      requests: 5,
      'requests.GET': 4,
      'requests.POST': 1,
      'status.2xx': 3,
      'status.4xx': 1,
      'status.5xx': 1,
      pageviews: 2,
    })
    expect(await kit.analytics.topPages()).toEqual([
      { path: '/', count: 1 },
      { path: '/products/:id', count: 1 },
    ])
    const series = await kit.analytics.series('requests')
    expect(series.reduce((sum, p) => sum + p.value, 0)).toBe(5)
  })

  it('counts a request answered later, and one whose client left first, once each with its latency', async () => {
    const kit = newKit()
    const server = express()
    server.use(analytics(kit))
    server.get('/sync', (_req, res) => res.send('now'))
    server.get('/later', (_req, res) => {
      setTimeout(() => res.send('later'), 60)
    })
    let abandoned!: () => void
    const left = new Promise<void>((resolve) => {
      abandoned = resolve
    })
    server.get('/never', (req) => {
      req.socket.on('close', abandoned)
    })
    const http = server.listen(0, '127.0.0.1')
    await new Promise((r) => http.once('listening', r))
    try {
      await request(http).get('/sync').expect(200)
      await request(http).get('/later').expect(200)
      const controller = new AbortController()
      const { port } = http.address() as { port: number }
      const pending = fetch(`http://127.0.0.1:${port}/never`, { signal: controller.signal }).catch(() => null)
      await new Promise((r) => setTimeout(r, 50))
      controller.abort()
      await pending
      await left
      await new Promise((r) => setTimeout(r, 20))
      await kit.analytics.flush()
      const { totals } = await kit.analytics.stats()
      // Three requests, each once; the abandoned one as 499 (client closed), not a page view.
      expect(totals).toMatchObject({ requests: 3, 'status.2xx': 2, 'status.4xx': 1, pageviews: 2 })
      const ranking = await kit.analytics.topPages({ limit: 5 })
      expect(ranking.map((r) => r.path).sort()).toEqual(['/later', '/sync'])
      // The delayed answer's 60 ms and the abandoned request's 50 ms are in the latency sum.
      expect(totals['latency.ms']).toBeGreaterThanOrEqual(100)
    } finally {
      await new Promise((r) => http.close(r))
    }
  })

  it('counts unique visitors by a salted hash shared by every instance, without storing the IP', async () => {
    const prefix = uniquePrefix('analytics-visitors')
    const one = newKit(prefix)
    const two = newKit(prefix)
    const a = app(one)
    const b = app(two)
    const visit = (server: express.Express, ip: string, ua: string) =>
      request(server).get('/').set('X-Forwarded-For', ip).set('User-Agent', ua).expect(200)
    for (let i = 0; i < 20; i++) {
      // The same 20 visitors reach both instances.
      await visit(a, `203.0.113.${i}`, 'Firefox')
      await visit(b, `203.0.113.${i}`, 'Firefox')
    }
    await visit(a, '203.0.113.1', 'Chrome')
    await one.analytics.flush()
    await two.analytics.flush()
    expect(await one.analytics.uniques('pageviews')).toBe(21)
    const salts = await raw.keys(`${prefix}:analytics:salt:*`)
    expect(salts).toHaveLength(1)
    expect(await raw.pttl(salts[0] as string)).toBeGreaterThan(86_400_000)
    // No key or value holds an address.
    for (const key of await raw.keys(`${prefix}:*`)) {
      expect(key).not.toContain('203.0.113')
      const type = await raw.type(key)
      const dump =
        type === 'string'
          ? String(await raw.getBuffer(key))
          : type === 'hash'
            ? JSON.stringify(await raw.hgetall(key))
            : type === 'zset'
              ? JSON.stringify(await raw.call('ZRANGE', key, 0, -1))
              : type === 'list'
                ? JSON.stringify(await raw.lrange(key, 0, -1))
                : ''
      expect(dump).not.toContain('203.0.113')
    }
  })

  it('never delays or fails a request while Redis is down', async () => {
    const down = await startRedis()
    const kit = createRedkit({
      redis: down.url,
      prefix: uniquePrefix('analytics-mw-down'),
      configFile: false,
      env: {},
    })
    kits.push(kit)
    kit.analytics.configure({ flushInterval: 50 })
    const server = app(kit)
    await down.server.kill()
    const started = performance.now()
    for (let i = 0; i < 20; i++) await request(server).get(`/products/${i}`).expect(200)
    expect(performance.now() - started).toBeLessThan(3000)
    await kit.analytics.flush()
    expect(kit.analytics.writer.pending).toBeGreaterThan(0)
    await down.stop()
  })

  it('counts by route pattern on Express 4 too', async () => {
    const kit = newKit()
    const a = express4()
    a.use(analytics(kit))
    a.get('/orders/:id', (_req, res) => res.send('order'))
    for (let i = 0; i < 5; i++) await request(a).get(`/orders/${i}`).expect(200)
    await request(a).get('/missing').expect(404)
    await kit.analytics.flush()
    expect(await kit.analytics.topRoutes()).toEqual([
      { path: 'GET /orders/:id', count: 5 },
      { path: 'GET (unmatched)', count: 1 },
    ])
  })

  it('skips requests the app excludes and exposes routePattern', async () => {
    const kit = newKit()
    const a = express()
    a.use(analytics(kit, { skip: (req) => req.path === '/healthz' }))
    a.get('/healthz', (_req, res) => res.send('ok'))
    a.get('/a/:b', (req, res) => res.send(routePattern(req)))
    await request(a).get('/healthz').expect(200)
    const res = await request(a).get('/a/1').expect(200)
    expect(res.text).toBe('/a/:b')
    await kit.analytics.flush()
    expect((await kit.analytics.stats()).totals.requests).toBe(1)
    expect(() => analytics(kit, { unmatched: '' })).toThrow(ConfigError)
  })
})

describe('/metrics', () => {
  it('exposes request counts and latency by route, module events and Redis command latency', async () => {
    const kit = newKit()
    const a = express()
    a.use(await metrics(kit))
    a.use(analytics(kit))
    a.get('/products/:id', (_req, res) => res.send('p'))
    for (let i = 0; i < 5; i++) await request(a).get(`/products/${i}`).expect(200)
    const emit = kit.events.emit.bind(kit.events) as (event: string, payload: unknown) => void
    emit('cache:hit', { cache: 'response', key: 'k', layer: 'l1' })
    emit('cache:hit', { cache: 'response', key: 'k', layer: 'l2' })
    emit('cache:miss', { cache: 'query', key: 'k' })
    emit('ratelimit:blocked', { policy: 'api', retryAfterMs: 1000 })
    emit('ratelimit:allowed', { policy: 'api' })
    emit('lock:wait', { resource: 'report', waitedMs: 20 })
    await kit.analytics.flush() // a module operation through hub.exec: a command latency sample
    const res = await request(a).get('/metrics').expect(200)
    expect(res.headers['content-type']).toMatch(/text\/plain/)
    const text = res.text
    expect(text).toContain(
      'redkit_http_requests_total{route="/products/:id",method="GET",status_class="2xx"} 5',
    )
    expect(text).toContain('redkit_http_request_duration_seconds_count{route="/products/:id",method="GET"} 5')
    expect(text).toContain('redkit_cache_events_total{cache="response",result="hit"} 2')
    expect(text).toContain('redkit_cache_events_total{cache="query",result="miss"} 1')
    expect(text).toContain('redkit_ratelimit_requests_total{policy="api",result="blocked"} 1')
    expect(text).toContain('redkit_ratelimit_requests_total{policy="api",result="allowed"} 1')
    expect(text).toContain('redkit_lock_events_total{event="wait"} 1')
    expect(text).toContain('redkit_lock_wait_seconds_count 1')
    expect(text).toMatch(/redkit_redis_command_duration_seconds_count\{ok="true"\} [1-9]/)
    expect(text).toContain('redkit_analytics_pending_entries')
  })

  it('bounds the cardinality of route and policy labels', async () => {
    const kit = newKit()
    const a = express()
    a.use(await metrics(kit, { maxLabelValues: 5 }))
    a.use(analytics(kit))
    for (let i = 0; i < 20; i++) a.get(`/r${i}`, (_req, res) => res.send('x'))
    for (let i = 0; i < 20; i++) await request(a).get(`/r${i}`).expect(200)
    for (let i = 0; i < 30; i++) await request(a).get(`/unknown/${i}`).expect(404)
    const emit = kit.events.emit.bind(kit.events) as (event: string, payload: unknown) => void
    for (let i = 0; i < 50; i++) emit('ratelimit:blocked', { policy: `p${i}`, retryAfterMs: 1 })
    const text = (await request(a).get('/metrics').expect(200)).text
    const routes = new Set(
      [...text.matchAll(/redkit_http_requests_total\{route="([^"]*)"/g)].map((m) => m[1]),
    )
    expect(routes.size).toBeLessThanOrEqual(6)
    expect(routes).toContain('(other)')
    expect(text).toContain('redkit_http_requests_total{route="(other)",method="GET",status_class="4xx"} 30')
    const policies = new Set(
      [...text.matchAll(/redkit_ratelimit_requests_total\{policy="([^"]*)"/g)].map((m) => m[1]),
    )
    expect(policies.size).toBe(6)
  })

  it('rejects with a clear ConfigError when prom-client is not installed', async () => {
    const missing = () =>
      Promise.reject(
        Object.assign(new Error("Cannot find package 'prom-client'"), { code: 'ERR_MODULE_NOT_FOUND' }),
      )
    const error = await loadPromClient(missing).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(ConfigError)
    expect((error as ConfigError).message).toMatch(/npm install prom-client/)
    expect((await loadPromClient()).Registry).toBeTypeOf('function')
  })
})
