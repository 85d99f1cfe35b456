import express from 'express'
import request from 'supertest'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { idempotency, lockRoute } from '../../middleware/index.js'
import { ConnectionError, createRedkit, LockUnavailableError, type Redkit } from '../../src/index.js'
import { type StandaloneRedis, startRedis, uniquePrefix } from '../helpers/redis-server.js'

const prefix = uniquePrefix('lockdown')
let redis: StandaloneRedis
let kit: Redkit

beforeAll(async () => {
  redis = await startRedis()
  kit = createRedkit({ redis: redis.url, prefix, configFile: false, env: {} })
  await kit.redis.ping()
  await redis.server.kill()
})
afterAll(async () => {
  await kit?.close()
  await redis?.stop()
})

describe('locks with Redis killed', () => {
  it('acquire, tryAcquire, using and once fail closed with LockUnavailableError within 3 s', async () => {
    let ran = false
    for (const attempt of [
      () => kit.locks.acquire('r'),
      () => kit.locks.tryAcquire('r'),
      () =>
        kit.locks.using('r', async () => {
          ran = true
        }),
      () =>
        kit.locks.once('r', async () => {
          ran = true
        }),
    ]) {
      const started = Date.now()
      const error = await attempt().catch((e: unknown) => e)
      expect(Date.now() - started).toBeLessThan(3000)
      expect(error).toBeInstanceOf(LockUnavailableError)
      expect((error as LockUnavailableError).code).toBe('E_LOCK_UNAVAILABLE')
      expect((error as LockUnavailableError).cause).toBeInstanceOf(ConnectionError)
    }
    expect(ran).toBe(false)
  })

  it('lockRoute and idempotency answer 503 problem+json without running the handler', async () => {
    let calls = 0
    const app = express()
    app.use(express.json())
    app.post('/locked', lockRoute(kit, { resource: () => 'x' }), (_req, res) => {
      calls++
      res.end()
    })
    app.post('/pay', idempotency(kit), (_req, res) => {
      calls++
      res.end()
    })
    const started = Date.now()
    const locked = await request(app).post('/locked')
    const pay = await request(app).post('/pay').set('Idempotency-Key', 'k').send({ a: 1 })
    expect(Date.now() - started).toBeLessThan(6000)
    for (const res of [locked, pay]) {
      expect(res.status).toBe(503)
      expect(res.headers['content-type']).toMatch(/application\/problem\+json/)
      expect(res.headers['retry-after']).toBe('1')
    }
    expect(calls).toBe(0)
  })
})
