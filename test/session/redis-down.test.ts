import request from 'supertest'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ConnectionError, createRedkit, type Redkit } from '../../src/index.js'
import { type StandaloneRedis, startRedis, uniquePrefix } from '../helpers/index.js'
import { cookieOf, sessionApp } from './app.js'

let redis: StandaloneRedis
let kit: Redkit

beforeAll(async () => {
  redis = await startRedis()
  kit = createRedkit({ redis: redis.url, prefix: uniquePrefix('session-down'), configFile: false, env: {} })
})

afterAll(async () => {
  await kit.close()
  await redis.stop()
})

async function eventually(check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`not true within ${timeoutMs} ms`)
    await new Promise((r) => setTimeout(r, 100))
  }
}

describe('when Redis is killed', () => {
  it('answers session routes with a fast 503 problem, keeps other routes up, and recovers', async () => {
    let unavailable = 0
    kit.on('session:unavailable', () => unavailable++)
    const app = sessionApp(kit)
    const agent = request.agent(app)
    const login = await agent.post('/account/login').expect(200)
    expect(cookieOf(login.headers['set-cookie'])).toBeDefined()

    await redis.server.kill()

    for (let i = 0; i < 5; i++) {
      const started = Date.now()
      const res = await agent.get('/account/me')
      expect(Date.now() - started).toBeLessThan(3_000)
      expect(res.status).toBe(503)
      expect(res.headers['content-type']).toMatch(/application\/problem\+json/)
      expect(res.headers['retry-after']).toBe('1')
      expect(res.body).toMatchObject({ status: 503, title: 'Session store unavailable' })
      expect(JSON.stringify(res.body)).not.toMatch(/\n\s+at |ECONNREFUSED|\.ts:/)
    }

    // a login cannot be kept: 503 instead of a 200 for a session that was never stored
    const started = Date.now()
    const fresh = await request(app).post('/account/login')
    expect(Date.now() - started).toBeLessThan(3_000)
    expect(fresh.status).toBe(503)
    expect(fresh.headers['set-cookie']).toBeUndefined()

    // routes that do not use sessions keep working
    for (let i = 0; i < 5; i++) await request(app).get('/public').expect(200, { ok: true })
    expect(unavailable).toBeGreaterThanOrEqual(6)

    await redis.server.start()
    // the data is gone with the restart; once reconnected, logging in works again
    await eventually(async () => (await agent.post('/account/login')).status === 200, 15_000)
    await agent.get('/account/me').expect(200)
  })

  it('a Redis that goes away between load and save answers 503 instead of a 200 for an unsaved change', async () => {
    const app = sessionApp(kit)
    const agent = request.agent(app)
    await agent.post('/account/login').expect(200)
    const pending = agent.post('/account/set?delay=200&a=1').then((r) => r) // .then sends it now
    await new Promise((r) => setTimeout(r, 100))
    await redis.server.kill()
    const started = Date.now()
    const res = await pending
    expect(Date.now() - started).toBeLessThan(3_000)
    expect(res.status).toBe(503)
    await redis.server.start()
  })

  it('a failure inside regenerate answers 503 problem+json instead of reaching the route as a 500', async () => {
    const app = sessionApp(kit)
    const agent = request.agent(app)
    await eventually(async () => (await agent.post('/account/login')).status === 200, 15_000)
    const pending = agent.post('/account/login?delay=200&user=bob').then((r) => r)
    await new Promise((r) => setTimeout(r, 100))
    await redis.server.kill()
    const res = await pending
    expect(res.status).toBe(503)
    expect(res.headers['content-type']).toMatch(/application\/problem\+json/)
    expect(res.headers['set-cookie']).toBeUndefined()
    await redis.server.start()
  })

  it('kit.sessions.touch rejects with ConnectionError within 3 s while Redis is down, and works after', async () => {
    await eventually(async () => kit.redis.status === 'ready', 15_000)
    const id = await kit.sessions.create('down-toucher', { n: 1 }, { ttl: '1m' })
    await redis.server.kill()
    const started = Date.now()
    await expect(kit.sessions.touch(id, { ttl: '2h' })).rejects.toBeInstanceOf(ConnectionError)
    expect(Date.now() - started).toBeLessThan(3_000)
    await redis.server.start()
    // The restart kept nothing: the session is gone, which touch reports instead of recreating it.
    await eventually(async () => kit.redis.status === 'ready', 15_000)
    expect(await kit.sessions.touch(id)).toBe(false)
    const again = await kit.sessions.create('down-toucher', {}, { ttl: '1m' })
    expect(await kit.sessions.touch(again, { ttl: '2h' })).toBe(true)
    expect((await kit.sessions.get(again))!.expiresAt).toBeGreaterThan(Date.now() + 7_000_000)
  })
})
