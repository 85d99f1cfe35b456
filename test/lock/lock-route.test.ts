import express from 'express'
import request from 'supertest'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { lockRoute } from '../../middleware/index.js'
import { ConfigError, createRedkit, type Lock, type Redkit } from '../../src/index.js'
import { type StandaloneRedis, startRedis, uniquePrefix } from '../helpers/redis-server.js'

const prefix = uniquePrefix('lockroute')
let redis: StandaloneRedis
let kit: Redkit

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

beforeAll(async () => {
  redis = await startRedis()
  kit = createRedkit({ redis: redis.url, prefix, configFile: false, env: {} })
})
afterAll(async () => {
  await kit?.close()
  await redis?.stop()
})

function app(wait?: number) {
  const a = express()
  const fences: number[] = []
  a.post(
    '/orders/:id/ship',
    lockRoute(kit, { resource: (req) => `order:${req.params.id}`, ttl: '5s', wait }),
    async (_req, res) => {
      const lock = res.locals.lock as Lock
      fences.push(lock.fence)
      await sleep(200)
      res.json({ fence: lock.fence })
    },
  )
  a.post('/open', lockRoute(kit, { resource: () => null }), (_req, res) => {
    res.json({ locked: res.locals.lock !== undefined })
  })
  return { app: a, fences }
}

describe('lockRoute', () => {
  it('answers 409 problem+json with Retry-After while another request holds the resource', async () => {
    const { app: a, fences } = app()
    const first = request(a)
      .post('/orders/1/ship')
      .then((r) => r)
    // Wait until the first request is inside its handler, holding the lock.
    for (let i = 0; i < 200 && fences.length === 0; i++) await sleep(10)
    expect(fences).toHaveLength(1)
    const second = await request(a).post('/orders/1/ship')
    expect(second.status).toBe(409)
    expect(second.headers['content-type']).toMatch(/application\/problem\+json/)
    expect(Number(second.headers['retry-after'])).toBeGreaterThanOrEqual(1)
    expect((await first).status).toBe(200)
    // Released once the response ended.
    const third = await request(a).post('/orders/1/ship')
    expect(third.status).toBe(200)
    expect(third.body.fence).toBeGreaterThan((await first).body.fence)
  })

  it('waits up to `wait` for the resource instead of answering 409', async () => {
    const { app: a, fences } = app(3000)
    const responses = await Promise.all([1, 2, 3].map(() => request(a).post('/orders/2/ship')))
    expect(responses.map((r) => r.status)).toEqual([200, 200, 200])
    expect(new Set(fences).size).toBe(3)
  })

  it('lets requests through unlocked when the resource function returns null', async () => {
    const { app: a } = app()
    const res = await request(a).post('/open')
    expect(res.body).toEqual({ locked: false })
  })

  it('rejects bad options at creation', () => {
    expect(() => lockRoute(kit, {} as never)).toThrow(ConfigError)
    expect(() => lockRoute(kit, { resource: () => 'x', ttl: 'later' })).toThrow(ConfigError)
  })
})
