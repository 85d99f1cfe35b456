import type { Cluster } from 'ioredis'
import request from 'supertest'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { RedisSessionStore } from '../../middleware/session.js'
import { createRedkit, type Redkit } from '../../src/index.js'
import { type RedisClusterGroup, startCluster, uniquePrefix } from '../helpers/index.js'
import { sessionApp } from './app.js'

let cluster: RedisClusterGroup
let kit: Redkit

beforeAll(async () => {
  cluster = await startCluster()
  kit = createRedkit({
    redis: { cluster: cluster.addresses },
    prefix: uniquePrefix('session-cluster'),
    configFile: false,
    env: {},
  })
})

afterAll(async () => {
  await kit?.close()
  await cluster?.stop()
})

function callback<T>(run: (cb: (error: unknown, value?: T) => void) => void): Promise<T | undefined> {
  return new Promise((resolve, reject) => run((error, value) => (error ? reject(error) : resolve(value))))
}

describe('sessions on Redis Cluster', () => {
  it('runs the login, merge, my-sessions and log-out-everywhere-else flow', async () => {
    const app = sessionApp(kit)
    const agents = Array.from({ length: 10 }, () => request.agent(app))
    const logins = await Promise.all(agents.map((a) => a.post('/account/login?user=kim').expect(200)))
    const me = agents[0]!
    await Promise.all([
      me.post('/account/set?delay=100&a=1').expect(200),
      me.post('/account/set?delay=100&b=2').expect(200),
    ])
    expect((await me.get('/account/me').expect(200)).body).toMatchObject({ a: '1', b: '2', userId: 'kim' })
    const listed = await me.get('/account/sessions').expect(200)
    expect(listed.body.map((s: { id: string }) => s.id).sort()).toEqual(logins.map((r) => r.body.id).sort())
    expect((await me.post('/account/logout-others').expect(200)).body.revoked).toBe(9)
    const after = await Promise.all(agents.slice(1).map((a) => a.get('/account/me')))
    expect(after.every((r) => r.status === 401)).toBe(true)
    await me.get('/account/me').expect(200)
    await me.post('/account/logout').expect(200)
    expect(await kit.sessions.listForUser('kim')).toEqual([])
  })

  it('keeps programmatic sessions and their user index in one slot', async () => {
    const ids = await Promise.all([1, 2, 3].map(() => kit.sessions.create('lee', { n: 1 }, { ttl: '1m' })))
    const client = kit.redis as Cluster
    const slot = (key: string) => client.call('CLUSTER', 'KEYSLOT', key) as Promise<number>
    const indexSlot = await slot(kit.sessions.repository.indexKey('lee'))
    for (const id of ids) expect(await slot(kit.sessions.repository.sessionKey(id))).toBe(indexSlot)
    expect(await kit.sessions.update(ids[0]!, { n: 2 })).toBe(true)
    expect((await kit.sessions.get(ids[0]!))!.data).toEqual({ n: 2 })
    expect((await kit.sessions.listForUser('lee')).map((s) => s.id).sort()).toEqual([...ids].sort())
    expect(await kit.sessions.revokeAllForUser('lee', { except: ids[1] })).toBe(2)
    expect((await kit.sessions.listForUser('lee')).map((s) => s.id)).toEqual([ids[1]])
  })

  it('lists, counts and clears sessions with SCAN on every master', async () => {
    const k = createRedkit({
      redis: { cluster: cluster.addresses },
      prefix: uniquePrefix('session-cluster-store'),
      configFile: false,
      env: {},
    })
    const store = new RedisSessionStore({ kit: k })
    const cookie = {
      originalMaxAge: 60_000,
      expires: new Date(Date.now() + 60_000),
      path: '/',
      httpOnly: true,
    }
    const ids = Array.from({ length: 30 }, (_, i) => `sid-${i}`)
    await Promise.all(
      ids.map((id, i) => callback((cb) => store.set(id, { cookie, i, userId: `u${i % 3}` } as never, cb))),
    )
    // the keys really are spread over the masters
    const perNode = await Promise.all(
      (k.redis as Cluster)
        .nodes('master')
        .map(async (node) => (await node.keys(`${k.prefix}:session:*`)).length),
    )
    expect(perNode.filter((n) => n > 0).length).toBeGreaterThan(1)
    expect(await callback<number>((cb) => store.length(cb))).toBe(30)
    expect((await callback<string[]>((cb) => store.ids(cb)))?.sort()).toEqual([...ids].sort())
    expect(await callback<unknown[]>((cb) => store.all(cb as never))).toHaveLength(30)
    expect(await k.sessions.listForUser('u1')).toHaveLength(10)
    await callback((cb) => store.clear(cb))
    expect(await callback<number>((cb) => store.length(cb))).toBe(0)
    expect(await k.sessions.listForUser('u1')).toEqual([])
    await k.close()
  })
})
