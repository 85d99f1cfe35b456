import express from 'express'
import request from 'supertest'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { idempotency } from '../../middleware/index.js'
import { ConfigError, createLocks, createRedkit, type Redkit } from '../../src/index.js'
import { type RedisClusterGroup, startCluster, uniquePrefix } from '../helpers/redis-server.js'

const prefix = uniquePrefix('lockcluster')
let cluster: RedisClusterGroup
let kit: Redkit

beforeAll(async () => {
  cluster = await startCluster()
  kit = createRedkit({ redis: { cluster: cluster.addresses }, prefix, configFile: false, env: {} })
})
afterAll(async () => {
  await kit?.close()
  await cluster?.stop()
})

describe('locks on a 3-master Cluster', () => {
  it('locks resources whose names hold braces and separators, each under its own escaped hash tag', async () => {
    const names = ['{a}', 'a}b{c', 'x:y:z', '{user}:42', '%7B', 'plain']
    const locks = await Promise.all(names.map((n) => kit.locks.tryAcquire(n, { ttl: '5s' })))
    expect(locks.every((l) => l !== null)).toBe(true)
    for (const n of names) expect(await kit.locks.tryAcquire(n)).toBeNull()
    const released = await Promise.all(locks.map((l) => l?.release()))
    expect(released).toEqual(names.map(() => true))
    const again = await kit.locks.tryAcquire('{user}:42')
    expect(again?.fence).toBe((locks[3]?.fence ?? 0) + 1)
    await again?.release()
  })

  it('locks several resources at once when they share a hash tag', async () => {
    const accounts = createLocks(kit, { hashTag: (r) => r.split(':')[0] ?? r })
    const both = await accounts.acquire(['acct:1', 'acct:2'], { ttl: '5s' })
    expect(both.fences).toHaveLength(2)
    expect(await accounts.tryAcquire('acct:2')).toBeNull()
    await both.release()
    expect(await accounts.tryAcquire(['acct:2', 'acct:3'])).not.toBeNull()
  })

  it('refuses a multi-resource lock spanning slots with a ConfigError that says how to fix it', async () => {
    await expect(kit.locks.acquire(['a', 'b'])).rejects.toThrow(ConfigError)
    await expect(kit.locks.acquire(['a', 'b'])).rejects.toThrow(/hashTag/)
  })

  it('runs using() and once() on Cluster', async () => {
    const fence = await kit.locks.using('job:{nightly}', async (lock) => lock.fence)
    expect(fence).toBeGreaterThan(0)
    let runs = 0
    const job = async () => ++runs
    expect(await Promise.all([kit.locks.once('c:1', job), kit.locks.once('c:1', job)])).toEqual([1, 1])
  })

  it('replays idempotent responses on Cluster', async () => {
    let calls = 0
    const app = express()
    app.use(express.json())
    app.use(idempotency(kit))
    app.post('/pay', (_req, res) => {
      calls++
      res.status(201).json({ calls })
    })
    const key = '"{slot}:key"'
    await request(app).post('/pay').set('Idempotency-Key', key).send({ a: 1 })
    const replay = await request(app).post('/pay').set('Idempotency-Key', key).send({ a: 1 })
    expect(replay.headers['idempotent-replayed']).toBe('true')
    expect(replay.body).toEqual({ calls: 1 })
    expect(calls).toBe(1)
  })
})
