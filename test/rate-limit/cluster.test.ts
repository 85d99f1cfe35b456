import express from 'express'
import type { Cluster } from 'ioredis'
import request from 'supertest'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { rateLimit } from '../../middleware/index.js'
import { createRedkit, type Redkit } from '../../src/index.js'
import { type RedisClusterGroup, startCluster, uniquePrefix } from '../helpers/index.js'
import { deleteAndPublishOrder } from './sent.js'

let cluster: RedisClusterGroup
const kits: Redkit[] = []
const prefix = uniquePrefix('rl-cluster')

function kit(): Redkit {
  const k = createRedkit({
    redis: { cluster: cluster.addresses },
    prefix, // Generous: the machine is shared and 1000 concurrent checks must not fall back to memory.
    commandTimeout: 5000,
    configFile: false,
    env: {},
  })
  kits.push(k)
  return k
}

beforeAll(async () => {
  cluster = await startCluster()
})

afterAll(async () => {
  await Promise.all(kits.map((k) => k.close()))
  await cluster?.stop()
})

describe('rate limiter on Redis Cluster', () => {
  it('allows exactly 100 of 1000 concurrent consumes from three kits at a 100-point limit', async () => {
    const three = [kit(), kit(), kit()]
    const options = {
      name: 'conc',
      limits: [
        { name: 'minute', points: 100, duration: '1m' },
        { name: 'day', points: 5000, duration: '1d' },
      ],
    }
    const results = await Promise.all(
      Array.from({ length: 1000 }, (_, i) => three[i % 3]!.rateLimits.consume('shared', options)),
    )
    expect(results.filter((r) => r.source !== 'redis')).toEqual([])
    expect(results.filter((r) => r.allowed)).toHaveLength(100)
    const state = await three[1]!.rateLimits.get('shared', options)
    expect(state.limits.map((l) => l.remaining)).toEqual([0, 4900])
  })

  it('spreads keys over the slots while keeping each policy and key in one', async () => {
    const k = kit()
    const options = { name: 'spread', limits: [{ points: 5, duration: '1m' }], blockDuration: '1m' }
    const results = await Promise.all(
      Array.from({ length: 60 }, (_, i) => k.rateLimits.consume(`client-${i}`, options)),
    )
    expect(results.every((r) => r.allowed)).toBe(true)
    const masters = (k.redis as Cluster).nodes('master')
    const perNode = await Promise.all(masters.map((node) => node.keys(`${prefix}:ratelimit:{spread/*`)))
    expect(perNode.filter((keys) => keys.length > 0).length).toBeGreaterThan(1)
    expect(perNode.flat()).toHaveLength(60)
    // A rejection that sets the block key in the same script works on Cluster too.
    for (let i = 0; i < 5; i++) await k.rateLimits.consume('client-0', options)
    expect(await kit().rateLimits.consume('client-0', options)).toMatchObject({
      allowed: false,
      blocked: true,
    })
    await k.rateLimits.reset('client-0', options)
    expect((await kit().rateLimits.consume('client-0', options)).allowed).toBe(true)
  })

  it('publishes a reset only once its DEL is answered, since the two go to different nodes', async () => {
    const k = kit()
    const options = { name: 'reset-order', limits: [{ points: 1, duration: '1m' }] }
    await k.rateLimits.consume('o', options)
    const order = await deleteAndPublishOrder(k.redis as Cluster, () => k.rateLimits.reset('o', options))
    expect(order).toEqual(['DEL sent', 'DEL answered', 'PUBLISH sent'])
    expect((await k.rateLimits.consume('o', options)).allowed).toBe(true)
  })

  it('serves the middleware with headers through the Cluster', async () => {
    const app = express()
    app.use(rateLimit(kit(), { name: 'mw', limits: [{ name: 'default', points: 1, duration: '10s' }] }))
    app.get('/', (_req, res) => res.send('ok'))
    const ok = await request(app).get('/').expect(200)
    expect(ok.headers['ratelimit-policy']).toBe('"default";q=1;w=10')
    expect(ok.headers.ratelimit).toMatch(/^"default";r=0;t=(9|10)$/)
    await request(app).get('/').expect(429)
  })

  it('answers within the command timeout from the memory limiter when a Cluster node dies', async () => {
    const k = createRedkit({
      redis: { cluster: cluster.addresses },
      prefix,
      commandTimeout: 500,
      configFile: false,
      env: {},
    })
    kits.push(k)
    k.on('error', () => undefined)
    const options = { name: 'dying', limits: [{ points: 100, duration: '1m' }] }
    const keys = Array.from({ length: 12 }, (_, i) => `c${i}`)
    for (const key of keys) expect((await k.rateLimits.consume(key, options)).source).toBe('redis')
    await cluster.nodes[0]!.kill()
    const answers = await Promise.all(
      keys.map(async (key) => {
        const started = Date.now()
        const r = await k.rateLimits.consume(key, options)
        return { source: r.source, allowed: r.allowed, ms: Date.now() - started }
      }),
    )
    expect(answers.every((a) => a.allowed)).toBe(true)
    expect(Math.max(...answers.map((a) => a.ms))).toBeLessThan(500 + 2000)
    // Keys served by the dead node fell back to memory; the others still counted in Redis.
    expect(answers.some((a) => a.source === 'memory')).toBe(true)
  })
})
