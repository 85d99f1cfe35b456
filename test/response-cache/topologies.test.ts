import express4 from 'express4'
import request from 'supertest'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { responseCache } from '../../middleware/response-cache.js'
import { createRedkit, type Redkit } from '../../src/index.js'
import {
  type RedisClusterGroup,
  type StandaloneRedis,
  startCluster,
  startRedis,
  uniquePrefix,
} from '../helpers/index.js'
import { appWith, nextStore, sleep } from './setup.js'

let cluster: RedisClusterGroup
let redis: StandaloneRedis
let clusterKit: Redkit
let kit: Redkit

beforeAll(async () => {
  ;[cluster, redis] = await Promise.all([startCluster(), startRedis()])
  clusterKit = createRedkit({
    redis: { cluster: cluster.addresses },
    prefix: uniquePrefix('rc-cluster'),
    configFile: false,
    env: {},
  })
  kit = createRedkit({ redis: redis.url, prefix: uniquePrefix('rc-e4'), configFile: false, env: {} })
})
afterAll(async () => {
  await clusterKit?.close()
  await kit?.close()
  await cluster?.stop()
  await redis?.stop()
})

describe('Redis Cluster', () => {
  it('caches, selects Vary variants, purges and takes leases across slots', async () => {
    let calls = 0
    const cache = responseCache(clusterKit)
    const app = appWith(cache, (a) =>
      a.get('/c', (req, res) => {
        calls++
        res.set('Vary', 'Accept-Language')
        res.set('Cache-Tag', 'catalog')
        res.send(`${req.get('accept-language')}-${calls}`)
      }),
    )
    let stored = nextStore(clusterKit, 2)
    await request(app).get('/c').set('Accept-Language', 'fr')
    await stored
    stored = nextStore(clusterKit, 2)
    await request(app).get('/c').set('Accept-Language', 'de')
    await stored
    const fr = await request(app).get('/c').set('Accept-Language', 'fr')
    expect([fr.text, fr.headers['x-cache']]).toEqual(['fr-1', 'HIT'])
    await cache.purge('http://127.0.0.1/c')
    expect((await request(app).get('/c').set('Accept-Language', 'de')).headers['x-cache']).toBe('MISS')
    await sleep(100)
    await cache.invalidateTags(['catalog'])
    expect((await request(app).get('/c').set('Accept-Language', 'de')).text).toBe('de-4')
  })
})

describe('Express 4', () => {
  it('caches, serves stale while one background refresh runs', async () => {
    let calls = 0
    const app = express4()
    app.use(responseCache(kit))
    app.get('/e4', (_req, res) => {
      calls++
      res.set('Cache-Control', 'max-age=1, stale-while-revalidate=30')
      res.send(`v${calls}`)
    })
    let stored = nextStore(kit)
    await request(app).get('/e4')
    await stored
    expect((await request(app).get('/e4')).headers['x-cache']).toBe('HIT')
    await sleep(1100)
    stored = nextStore(kit)
    const stale = await request(app).get('/e4')
    expect([stale.text, stale.headers['x-cache']]).toEqual(['v1', 'STALE'])
    await stored
    expect((await request(app).get('/e4')).text).toBe('v2')
  })
})
