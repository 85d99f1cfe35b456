import request from 'supertest'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { responseCache } from '../../middleware/response-cache.js'
import type { Redkit } from '../../src/index.js'
import { type StandaloneRedis, startRedis, uniquePrefix } from '../helpers/index.js'
import { appWith, eventually, makeKit, nextStore } from './setup.js'

let redis: StandaloneRedis
let kit: Redkit

beforeAll(async () => {
  redis = await startRedis()
  kit = makeKit(redis.url, uniquePrefix('rc-down'))
})
afterAll(async () => {
  await kit.close()
  await redis.stop()
})

describe('Redis down', () => {
  it('fails open with X-Cache: BYPASS, answers within 3 s, and caches again once Redis is back', async () => {
    let calls = 0
    const bypasses: string[] = []
    const off = kit.on('cache:bypass', (e) => {
      if (e.cache === 'response') bypasses.push(e.reason)
    })
    const app = appWith(responseCache(kit, { l1: false }), (a) =>
      a.get('/down', (_req, res) => {
        calls++
        res.send(`v${calls}`)
      }),
    )
    const stored = nextStore(kit)
    await request(app).get('/down')
    await stored
    expect((await request(app).get('/down')).headers['x-cache']).toBe('HIT')

    await redis.server.kill()
    for (let i = 0; i < 5; i++) {
      const started = Date.now()
      const res = await request(app).get('/down')
      expect(Date.now() - started).toBeLessThan(3000)
      expect(res.status).toBe(200)
      expect(res.headers['x-cache']).toBe('BYPASS')
    }
    expect(calls).toBe(6)
    expect(bypasses).toContain('redis-unavailable')
    // Unsafe methods still succeed (the invalidation fails in the background).
    const app2 = appWith(responseCache(kit, { l1: false }), (a) =>
      a.post('/down', (_q, r) => r.status(201).end()),
    )
    expect((await request(app2).post('/down')).status).toBe(201)

    await redis.server.start()
    await eventually(async () => (await request(app).get('/down')).headers['x-cache'] !== 'BYPASS', 15_000)
    off()
  })

  it('keeps serving fresh entries held in memory while Redis is down', async () => {
    // The bus clears memory when its subscriber comes back after an outage: wait for that first.
    await eventually(
      async () => (await kit.health()).status === 'ok' && kit.hub.dedicated('subscriber').status === 'ready',
      15_000,
    )
    await new Promise((r) => setTimeout(r, 200))
    let calls = 0
    const app = appWith(responseCache(kit), (a) =>
      a.get('/memory', (_req, res) => {
        calls++
        res.set('Cache-Control', 'max-age=60')
        res.send(`v${calls}`)
      }),
    )
    const stored = nextStore(kit)
    await request(app).get('/memory')
    await stored
    await redis.server.kill()
    const res = await request(app).get('/memory')
    expect([res.text, res.headers['x-cache']]).toEqual(['v1', 'HIT'])
    const other = await request(app).get('/memory-other')
    expect(other.status).toBe(404)
    expect(other.headers['x-cache']).toBe('BYPASS')
    await redis.server.start()
  })
})
