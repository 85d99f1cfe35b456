import express from 'express'
import request from 'supertest'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { responseCache } from '../../middleware/response-cache.js'
import { session } from '../../middleware/session.js'
import type { Redkit } from '../../src/index.js'
import { type StandaloneRedis, startRedis, uniquePrefix } from '../helpers/index.js'
import { makeKit, sleep } from './setup.js'

declare module 'express-session' {
  interface SessionData {
    n?: number
    big?: string
  }
}

let redis: StandaloneRedis
let kit: Redkit
let n = 0
const path = (name: string) => `/c${++n}/${name}`

beforeAll(async () => {
  redis = await startRedis()
  kit = makeKit(redis.url, uniquePrefix('rc-session'))
})
afterAll(async () => {
  await kit.close()
  await redis.stop()
})

/** session() mounted before the cache, as an app-wide session usually is. */
function sessionApp(p: string, route: express.RequestHandler, maxSize?: number) {
  const app = express()
  app.use(session(kit, { secret: 'x'.repeat(32), ...(maxSize ? { maxSize } : {}) }))
  app.use(responseCache(kit))
  app.get(p, route)
  return app
}

describe('behind session()', () => {
  it('a response that creates a session (Set-Cookie added as the head is written) is not stored', async () => {
    const p = path('creates')
    const app = sessionApp(p, (req, res) => {
      req.session.n = 1
      res.json({ sid: req.sessionID })
    })
    const first = await request(app).get(p)
    expect(first.headers['set-cookie']).toBeDefined()
    await sleep(100)
    const second = await request(app).get(p)
    expect(second.headers['x-cache']).toBe('MISS')
    expect(second.headers['set-cookie']).toBeDefined()
    expect(second.body.sid).not.toBe(first.body.sid)
  })

  it('a response replaced by an error because the session could not be saved is not stored', async () => {
    const p = path('save-fails')
    const app = sessionApp(
      p,
      (req, res) => {
        req.session.big = 'x'.repeat(2000)
        res.json({ sid: req.sessionID })
      },
      1000,
    )
    const first = await request(app).get(p)
    expect(first.status).toBe(500)
    await sleep(100)
    const second = await request(app).get(p)
    expect([second.status, second.headers['x-cache']]).toEqual([500, 'MISS'])
  })

  it('also when session() is mounted after the cache', async () => {
    const p = path('after')
    const app = express()
    app.use(responseCache(kit))
    app.use(session(kit, { secret: 'x'.repeat(32) }))
    app.get(p, (req, res) => {
      req.session.n = 1
      res.json({ sid: req.sessionID })
    })
    const first = await request(app).get(p)
    expect(first.headers['set-cookie']).toBeDefined()
    await sleep(100)
    const second = await request(app).get(p)
    expect([second.headers['x-cache'], second.headers['set-cookie'] !== undefined]).toEqual(['MISS', true])
    expect(second.body.sid).not.toBe(first.body.sid)
  })

  it('a response that leaves the session alone is stored and served without a cookie', async () => {
    const p = path('untouched')
    let calls = 0
    const app = sessionApp(p, (_req, res) => {
      calls++
      res.json({ calls })
    })
    const stored = new Promise<void>((resolve) => {
      const off = kit.on('cache:store', () => {
        off()
        resolve()
      })
    })
    const first = await request(app).get(p)
    expect(first.headers['set-cookie']).toBeUndefined()
    await stored
    const second = await request(app).get(p)
    expect([second.headers['x-cache'], second.body.calls, second.headers['set-cookie']]).toEqual([
      'HIT',
      1,
      undefined,
    ])
  })
})
