import compression from 'compression'
import express from 'express'
import request from 'supertest'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { responseCache } from '../../middleware/response-cache.js'
import type { Redkit } from '../../src/index.js'
import { type StandaloneRedis, startRedis, uniquePrefix } from '../helpers/index.js'
import { makeKit, nextStore } from './setup.js'

let redis: StandaloneRedis
let kit: Redkit
const body = 'compressible text '.repeat(200)

beforeAll(async () => {
  redis = await startRedis()
  kit = makeKit(redis.url, uniquePrefix('rc-gzip'))
})
afterAll(async () => {
  await kit.close()
  await redis.stop()
})

function get(app: express.Express, p: string, encoding: string) {
  return request(app).get(p).set('Accept-Encoding', encoding)
}

describe('with the compression middleware', () => {
  it('cache outside compression: stores each encoding as its own variant, never gzip to identity clients', async () => {
    let calls = 0
    const app = express()
    app.use(responseCache(kit))
    app.use(compression({ threshold: 0 }))
    app.get('/outer', (_req, res) => {
      calls++
      res.type('text/plain').send(body)
    })
    let stored = nextStore(kit, 2)
    const gz = await get(app, '/outer', 'gzip')
    expect(gz.headers['content-encoding']).toBe('gzip')
    expect(gz.text).toBe(body)
    await stored
    stored = nextStore(kit, 2)
    const plain = await get(app, '/outer', 'identity')
    expect(plain.headers['content-encoding']).toBeUndefined()
    expect(plain.text).toBe(body)
    await stored
    const gzHit = await get(app, '/outer', 'gzip')
    expect([gzHit.headers['x-cache'], gzHit.headers['content-encoding'], gzHit.text]).toEqual([
      'HIT',
      'gzip',
      body,
    ])
    const plainHit = await get(app, '/outer', 'identity')
    expect([plainHit.headers['x-cache'], plainHit.headers['content-encoding'], plainHit.text]).toEqual([
      'HIT',
      undefined,
      body,
    ])
    expect(calls).toBe(2)
  })

  it('cache inside compression: stores the identity body, compressed on the way out only when asked', async () => {
    let calls = 0
    const app = express()
    app.use(compression({ threshold: 0 }))
    app.use(responseCache(kit))
    app.get('/inner', (_req, res) => {
      calls++
      res.type('text/plain').send(body)
    })
    const stored = nextStore(kit)
    const gz = await get(app, '/inner', 'gzip')
    expect(gz.headers['content-encoding']).toBe('gzip')
    expect(gz.headers['x-cache']).toBe('MISS')
    await stored
    const plain = await get(app, '/inner', 'identity')
    expect([plain.headers['x-cache'], plain.headers['content-encoding'], plain.text]).toEqual([
      'HIT',
      undefined,
      body,
    ])
    const gzHit = await get(app, '/inner', 'gzip')
    expect([gzHit.headers['x-cache'], gzHit.headers['content-encoding'], gzHit.text]).toEqual([
      'HIT',
      'gzip',
      body,
    ])
    expect(calls).toBe(1)
  })
})
