import express from 'express'
import request from 'supertest'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { loginProtection, rateLimit } from '../../middleware/index.js'
import { createRedkit, LoginGuard, type OnRedisError, type Redkit } from '../../src/index.js'
import { type StandaloneRedis, startRedis, uniquePrefix } from '../helpers/index.js'

let redis: StandaloneRedis
const kits: Redkit[] = []
const prefix = uniquePrefix('rl-down')
const COMMAND_TIMEOUT = 300

beforeAll(async () => {
  redis = await startRedis()
})

afterAll(async () => {
  await Promise.all(kits.map((k) => k.close()))
  await redis?.stop()
})

function setup(mode: OnRedisError) {
  const kit = createRedkit({
    redis: redis.url,
    prefix,
    commandTimeout: COMMAND_TIMEOUT,
    configFile: false,
    env: {},
  })
  kit.on('error', () => undefined)
  kits.push(kit)
  const app = express()
  app.use(
    rateLimit(kit, { name: `down-${mode}`, limits: [{ points: 3, duration: '1m' }], onRedisError: mode }),
  )
  app.get('/', (_req, res) => res.send('ok'))
  return { kit, app }
}

/** Sends `count` requests one after another; returns statuses and the slowest duration. */
async function run(app: express.Express, count: number) {
  const statuses: number[] = []
  const headers: Array<string | undefined> = []
  let slowest = 0
  for (let i = 0; i < count; i++) {
    const started = Date.now()
    const res = await request(app).get('/')
    slowest = Math.max(slowest, Date.now() - started)
    statuses.push(res.status)
    headers.push(res.headers.ratelimit)
  }
  return { statuses, headers, slowest }
}

async function killDuringRun(app: express.Express) {
  const before = await run(app, 2)
  expect(before.statuses).toEqual([200, 200])
  await redis.server.kill()
  try {
    return await run(app, 6)
  } finally {
    await redis.server.start()
  }
}

describe('Redis killed during a run', () => {
  it("'memory' (the default) keeps limiting in process with the same limits", async () => {
    const { app } = setup('memory')
    const down = await killDuringRun(app)
    // The insurance limiter starts empty: 3 more pass, then 429.
    expect(down.statuses).toEqual([200, 200, 200, 429, 429, 429])
    expect(down.headers[0]).toMatch(/r=2/)
    // Liveness bound: no request waits much beyond the command timeout (generous margin).
    expect(down.slowest).toBeLessThan(COMMAND_TIMEOUT + 2000)
  })

  it("'open' lets every request through while Redis is away, without RateLimit headers", async () => {
    const { app } = setup('open')
    const down = await killDuringRun(app)
    expect(down.statuses).toEqual([200, 200, 200, 200, 200, 200])
    expect(down.headers.every((h) => h === undefined)).toBe(true)
    expect(down.slowest).toBeLessThan(COMMAND_TIMEOUT + 2000)
  })

  it("'closed' refuses with 503 problem+json and Retry-After while Redis is away", async () => {
    const { app } = setup('closed')
    await run(app, 2)
    await redis.server.kill()
    try {
      const started = Date.now()
      const res = await request(app).get('/')
      expect(Date.now() - started).toBeLessThan(COMMAND_TIMEOUT + 2000)
      expect(res.status).toBe(503)
      expect(res.headers['content-type']).toMatch(/problem\+json/)
      expect(res.headers['retry-after']).toBe('1')
      expect(res.headers.ratelimit).toBeUndefined()
      const rest = await run(app, 4)
      expect(rest.statuses).toEqual([503, 503, 503, 503])
    } finally {
      await redis.server.start()
    }
  })

  it("loginProtection with 'closed' answers 503, not a brute-force 429, while Redis is away", async () => {
    const { kit } = setup('closed')
    const app = express()
    app.use(express.json())
    app.post('/login', loginProtection(kit, { name: 'down-login', onRedisError: 'closed' }), (_req, res) => {
      res.status(401).json({ ok: false })
    })
    const send = () => request(app).post('/login').send({ username: 'ann', password: 'x' })
    expect((await send()).status).toBe(401)
    await redis.server.kill()
    try {
      const res = await send()
      expect(res.status).toBe(503)
      expect(res.headers['retry-after']).toBe('1')
      expect(res.body.detail).toMatch(/cannot be checked/)
    } finally {
      await redis.server.start()
    }
  })

  it("keeps the login guard's lockout to blockDuration in memory too", async () => {
    const { kit } = setup('memory')
    const guard = new LoginGuard(kit, {
      name: 'down-lockout',
      consecutiveFailures: { points: 2, duration: '1h', blockDuration: '1s' },
    })
    await redis.server.kill()
    try {
      for (let i = 0; i < 2; i++) (await guard.attempt('ivy', '10.0.0.3')).failed()
      const locked = await guard.attempt('ivy', '10.0.0.3')
      expect(locked).toMatchObject({ allowed: false })
      expect(locked.results.userIp?.source).toBe('memory')
      expect(locked.retryAfterMs).toBeLessThanOrEqual(1000)
      await new Promise((r) => setTimeout(r, 1100))
      const after = await guard.attempt('ivy', '10.0.0.3')
      expect(after).toMatchObject({ allowed: true })
      expect(after.results.userIp?.source).toBe('memory')
    } finally {
      await redis.server.start()
    }
  })

  it('reset clears what this instance holds in memory under every spelling of the policy, even while Redis is away', async () => {
    const { kit } = setup('memory')
    const limits = [{ points: 1, duration: '1m' }]
    const blocking = { name: 'down-reset', limits, blockDuration: '1m' }
    await redis.server.kill()
    try {
      await kit.rateLimits.consume('r', blocking)
      expect(await kit.rateLimits.consume('r', blocking)).toMatchObject({ allowed: false, source: 'memory' })
      expect((await kit.rateLimits.consume('r', blocking)).source).toBe('block-cache')
      await expect(kit.rateLimits.reset('r', { name: 'down-reset', limits })).rejects.toMatchObject({
        code: 'E_CONNECTION',
      })
      expect(await kit.rateLimits.consume('r', blocking)).toMatchObject({ allowed: true, source: 'memory' })
    } finally {
      await redis.server.start()
    }
  })

  it('goes back to the shared counters once Redis is back', async () => {
    const { app, kit } = setup('memory')
    // The restarted server lost its data; wait for the kit to reconnect.
    const deadline = Date.now() + 10_000
    while ((await kit.health()).status !== 'ok' && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 100))
    const r = await kit.rateLimits.consume('direct', {
      name: 'back',
      limits: [{ points: 3, duration: '1m' }],
    })
    expect(r.source).toBe('redis')
    const res = await request(app).get('/')
    expect(res.status).toBe(200)
    expect(res.headers.ratelimit).toMatch(/r=2/)
  })

  it('answers programmatic checks by mode while Redis is away, within the command timeout', async () => {
    const { kit } = setup('memory')
    const limits = [{ points: 2, duration: '1m' }]
    await kit.rateLimits.consume('p', { name: 'prog-memory', limits })
    await redis.server.kill()
    try {
      const started = Date.now()
      const memory = await kit.rateLimits.consume('p', { name: 'prog-memory', limits, blockDuration: '1m' })
      expect(Date.now() - started).toBeLessThan(COMMAND_TIMEOUT + 2000)
      expect(memory).toMatchObject({ allowed: true, source: 'memory' })
      await kit.rateLimits.consume('p', { name: 'prog-memory', limits, blockDuration: '1m' })
      const over = await kit.rateLimits.consume('p', { name: 'prog-memory', limits, blockDuration: '1m' })
      expect(over).toMatchObject({ allowed: false, source: 'memory' })
      expect(over.retryAfterMs).toBeGreaterThanOrEqual(59_000)
      // The block is kept in memory too.
      expect(
        (await kit.rateLimits.consume('p', { name: 'prog-memory', limits, blockDuration: '1m' })).source,
      ).toBe('block-cache')
      expect((await kit.rateLimits.get('p', { name: 'prog-memory', limits })).source).toBe('memory')
      expect(
        await kit.rateLimits.consume('p', { name: 'prog-open', limits, onRedisError: 'open' }),
      ).toMatchObject({
        allowed: true,
        source: 'fail-open',
        limits: [],
      })
      expect(
        await kit.rateLimits.consume('p', { name: 'prog-closed', limits, onRedisError: 'closed' }),
      ).toMatchObject({ allowed: false, source: 'fail-closed', retryAfterMs: 1000 })
      await expect(
        kit.rateLimits.get('p', { name: 'prog-open', limits, onRedisError: 'open' }),
      ).rejects.toMatchObject({
        code: 'E_CONNECTION',
      })
    } finally {
      await redis.server.start()
    }
  })
})
