import express from 'express'
import express4 from 'express4'
import request from 'supertest'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { health } from '../../middleware/index.js'
import { ConfigError, createRedkit, type Redkit } from '../../src/index.js'
import { type StandaloneRedis, startRedis, uniquePrefix } from '../helpers/redis-server.js'

const prefix = uniquePrefix('health')
let redis: StandaloneRedis
let kit: Redkit

beforeAll(async () => {
  redis = await startRedis()
  kit = createRedkit({ redis: redis.url, prefix, configFile: false, env: {}, commandTimeout: 300 })
})
afterAll(async () => {
  await kit.close()
  await redis.stop()
})

function app(k: Redkit, options?: Parameters<typeof health>[1]) {
  const a = express()
  a.use(health(k, options))
  a.get('/other', (_req, res) => res.send('other'))
  return a
}

describe('health middleware (Express 5)', () => {
  it('answers 200 with details when Redis answers', async () => {
    const res = await request(app(kit)).get('/healthz').expect(200)
    expect(res.headers['cache-control']).toBe('no-store')
    expect(res.body).toMatchObject({ status: 'ok', kind: 'standalone', role: 'master' })
    expect(res.body.latencyMs).toBeGreaterThan(0)
  })

  it('serves a custom path, hides details on request and passes other requests through', async () => {
    const a = app(kit, { path: '/ready', details: false })
    expect((await request(a).get('/ready').expect(200)).body).toEqual({ status: 'ok' })
    await request(a).get('/healthz').expect(404)
    await request(a).post('/ready').expect(404)
    expect((await request(a).get('/other').expect(200)).text).toBe('other')
  })

  it('answers 503 quickly when Redis is down', async () => {
    const own = await startRedis()
    const k = createRedkit({ redis: own.url, prefix, configFile: false, env: {}, commandTimeout: 300 })
    await k.redis.ping()
    await own.server.kill()
    const started = Date.now()
    const res = await request(app(k)).get('/healthz').expect(503)
    expect(Date.now() - started).toBeLessThan(3000)
    expect(res.body.status).toBe('down')
    expect(res.body.error).toBeTruthy()
    await k.close()
    await own.stop()
  })

  it('rejects bad options at creation', () => {
    expect(() => health(kit, { path: 'healthz' })).toThrow(ConfigError)
    expect(() => health(kit, { details: 'yes' as never })).toThrow(ConfigError)
  })
})

describe('Express 4 smoke test', () => {
  it('mounts the health middleware on Express 4', async () => {
    const a = express4()
    a.use(health(kit) as unknown as express4.RequestHandler)
    const res = await request(a).get('/healthz').expect(200)
    expect(res.body.status).toBe('ok')
  })
})
