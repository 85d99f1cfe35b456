import request from 'supertest'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createRedkit, type Redkit } from '../../src/index.js'
import { type SentinelGroup, startSentinelGroup, uniquePrefix } from '../helpers/index.js'
import { sessionApp } from './app.js'

let group: SentinelGroup
let kit: Redkit

beforeAll(async () => {
  group = await startSentinelGroup()
  kit = createRedkit({
    redis: { sentinels: group.sentinelAddresses, name: group.name },
    prefix: uniquePrefix('session-sentinel'),
    configFile: false,
    env: {},
  })
})

afterAll(async () => {
  await kit?.close()
  await group?.stop()
})

describe('Sentinel failover during a session flow', () => {
  it('keeps the logged-in session and its index across the promotion of the replica', async () => {
    const failovers: unknown[] = []
    kit.on('failover', (event) => failovers.push(event))
    const app = sessionApp(kit)
    const agent = request.agent(app)
    const other = request.agent(app)
    const { body } = await agent.post('/account/login?user=sam').expect(200)
    await other.post('/account/login?user=sam').expect(200)
    await agent.post('/account/set?cart=3').expect(200)
    // The sessions must be on the replica before the master dies (replication is asynchronous).
    expect(await kit.redis.call('WAIT', 1, 2000)).toBe(1)
    const oldMaster = await group.masterPort()

    await group.master.kill()

    // During the switch requests get 503 (never a hang); the flow continues after the promotion.
    const deadline = Date.now() + 45_000
    const statuses = new Set<number>()
    for (;;) {
      const started = Date.now()
      const res = await agent.get('/account/me')
      expect(Date.now() - started).toBeLessThan(3_000)
      statuses.add(res.status)
      if (res.status === 200) {
        expect(res.body).toMatchObject({ id: body.id, userId: 'sam', cart: '3' })
        break
      }
      expect(res.status).toBe(503)
      if (Date.now() > deadline) {
        throw new Error(
          `the session flow did not resume after the failover: kit ${kit.redis.status}, ${await group.describe()}`,
        )
      }
      await new Promise((r) => setTimeout(r, 200))
    }
    expect(await group.masterPort()).not.toBe(oldMaster)
    expect(failovers.length).toBeGreaterThanOrEqual(1)

    await agent.post('/account/set?cart=4').expect(200)
    expect((await agent.get('/account/me').expect(200)).body.cart).toBe('4')
    expect((await agent.get('/account/sessions').expect(200)).body).toHaveLength(2)
    expect((await agent.post('/account/logout-others').expect(200)).body.revoked).toBe(1)
    await other.get('/account/me').expect(401)
  })
})
