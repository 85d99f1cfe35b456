import express from 'express'
import request from 'supertest'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { loginProtection } from '../../middleware/index.js'
import { ConfigError, createRedkit, LoginGuard, type Redkit } from '../../src/index.js'
import { type StandaloneRedis, startRedis, uniquePrefix } from '../helpers/index.js'
import { listenForResets } from './listening.js'

let redis: StandaloneRedis
let kit: Redkit
const kits: Redkit[] = []
let n = 0

beforeAll(async () => {
  redis = await startRedis()
  kit = createRedkit({ redis: redis.url, prefix: uniquePrefix('rl-login'), configFile: false, env: {} })
})

afterAll(async () => {
  await kit?.close()
  await Promise.all(kits.map((k) => k.close()))
  await redis?.stop()
})

/** A login route: password 'right' succeeds (200), anything else 401, a missing one 400. */
function loginApp(options: Parameters<typeof loginProtection>[1] = {}) {
  const app = express()
  app.set('trust proxy', 'loopback')
  let checks = 0
  app.post(
    '/login',
    express.json(),
    loginProtection(kit, { name: `login${++n}`, ...options }),
    (req, res) => {
      if (typeof req.body?.password !== 'string')
        return void res.status(400).json({ error: 'password required' })
      checks++
      res.status(req.body.password === 'right' ? 200 : 401).json({ ok: req.body.password === 'right' })
    },
  )
  const attempt = (username: string | undefined, password: string | undefined, ip = '198.51.100.1') =>
    request(app).post('/login').set('X-Forwarded-For', ip).send({ username, password })
  return { attempt, checks: () => checks }
}

/** Waits for the 'finish' handlers (which settle attempts) to reach Redis. */
const settle = () => new Promise((r) => setTimeout(r, 150))

describe('loginProtection', () => {
  it('blocks a username + IP after consecutive failures and tells when to retry', async () => {
    const { attempt, checks } = loginApp({
      consecutiveFailures: { points: 3, duration: '1h', blockDuration: '15m' },
    })
    for (let i = 0; i < 3; i++) {
      await attempt('alice', 'wrong').expect(401)
      await settle()
    }
    const blocked = await attempt('alice', 'right')
    expect(blocked.status).toBe(429)
    expect(blocked.headers['content-type']).toMatch(/problem\+json/)
    expect(Number(blocked.headers['retry-after'])).toBeGreaterThan(14 * 60)
    // blockDuration, not the rest of the hour-long window.
    expect(Number(blocked.headers['retry-after'])).toBeLessThanOrEqual(15 * 60)
    expect(checks()).toBe(3)
    // The same account from another IP, and another account from this IP, are not blocked.
    await attempt('alice', 'right', '198.51.100.2').expect(200)
    await attempt('bob', 'right').expect(200)
  })

  it('clears consecutive failures on success', async () => {
    const { attempt } = loginApp({ consecutiveFailures: { points: 3, duration: '1h', blockDuration: '15m' } })
    for (let round = 0; round < 3; round++) {
      await attempt('carol', 'wrong').expect(401)
      await attempt('carol', 'wrong').expect(401)
      await settle()
      await attempt('carol', 'right').expect(200)
      await settle()
    }
  })

  it('normalizes usernames so case and spaces do not buy more guesses', async () => {
    const { attempt } = loginApp({ consecutiveFailures: { points: 2, duration: '1h', blockDuration: '1m' } })
    await attempt('Dave', 'wrong').expect(401)
    await attempt('  dave ', 'wrong').expect(401)
    await settle()
    await attempt('DAVE', 'wrong').expect(429)
  })

  it('limits failures per IP across usernames, and does not count successes or bad requests', async () => {
    const { attempt } = loginApp({
      consecutiveFailures: { points: 10, duration: '1h', blockDuration: '1m' },
      failuresPerIp: { points: 4, duration: '1d', blockDuration: '1h' },
    })
    const ip = '203.0.113.50'
    for (let i = 0; i < 5; i++) await attempt('erin', 'right', ip).expect(200)
    for (let i = 0; i < 5; i++) await attempt('erin', undefined, ip).expect(400)
    await settle()
    for (const user of ['u1', 'u2', 'u3', 'u4']) await attempt(user, 'wrong', ip).expect(401)
    await settle()
    const blocked = await attempt('u5', 'wrong', ip)
    expect(blocked.status).toBe(429)
    expect(Number(blocked.headers['retry-after'])).toBeGreaterThan(3500)
    expect(Number(blocked.headers['retry-after'])).toBeLessThanOrEqual(3600)
    await attempt('erin', 'right', ip).expect(429)
    await attempt('erin', 'right', '203.0.113.51').expect(200)
  })

  it('counts parallel guesses before the password is checked', async () => {
    const { attempt, checks } = loginApp({
      consecutiveFailures: { points: 5, duration: '1h', blockDuration: '1m' },
    })
    const responses = await Promise.all(
      Array.from({ length: 20 }, () => attempt('frank', 'wrong', '192.0.2.9')),
    )
    expect(responses.filter((r) => r.status === 401)).toHaveLength(5)
    expect(responses.filter((r) => r.status === 429)).toHaveLength(15)
    expect(checks()).toBe(5)
  })

  it('exposes the same flow programmatically', async () => {
    const guard = new LoginGuard(kit, {
      name: 'prog',
      consecutiveFailures: { points: 2, duration: '1h', blockDuration: '1m' },
    })
    const a1 = await guard.attempt('gina', '10.0.0.1')
    expect(a1.allowed).toBe(true)
    a1.failed()
    const a2 = await guard.attempt('gina', '10.0.0.1')
    a2.failed()
    const a3 = await guard.attempt('gina', '10.0.0.1')
    expect(a3.allowed).toBe(false)
    expect(a3.retryAfterMs).toBeGreaterThan(50_000)
    // The lockout is blockDuration (1 minute), not the rest of the hour-long window.
    expect(a3.retryAfterMs).toBeLessThanOrEqual(60_000)
    await guard.unblock('gina', '10.0.0.1')
    const a4 = await guard.attempt('gina', '10.0.0.1')
    expect(a4.allowed).toBe(true)
    await a4.succeeded()
  })

  it('unblock lifts a lockout for every guard of that name, whatever its budgets, on every instance', async () => {
    // Two app instances on a prefix of their own.
    const prefix = uniquePrefix('rl-unblock')
    const [one, two] = [1, 2].map(() =>
      createRedkit({ redis: redis.url, prefix, configFile: false, env: {} }),
    )
    kits.push(one!, two!)
    await Promise.all([listenForResets(one!), listenForResets(two!)])
    const budgets = {
      name: 'unblock-all',
      consecutiveFailures: { points: 1, duration: '1h', blockDuration: '15m' },
    }
    const ip = '10.0.0.4'
    const here = new LoginGuard(one!, budgets)
    const remote = new LoginGuard(two!, budgets)
    ;(await here.attempt('jo', ip)).failed()
    expect((await here.attempt('jo', ip)).allowed).toBe(false)
    expect((await remote.attempt('jo', ip)).allowed).toBe(false)
    expect((await here.attempt('jo', ip)).results.userIp?.source).toBe('block-cache')
    expect((await remote.attempt('jo', ip)).results.userIp?.source).toBe('block-cache')
    // A support tool's guard: the same name, the default budgets.
    await new LoginGuard(one!, { name: 'unblock-all' }).unblock('jo', ip)
    const again = await here.attempt('jo', ip)
    expect(again.allowed).toBe(true)
    await again.cancelled()
    const deadline = Date.now() + 1000
    while ((await remote.userIp.get(`${ip}|jo`)).source === 'block-cache' && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 10))
    expect((await remote.attempt('jo', ip)).allowed).toBe(true)
  })

  it('ends a lockout after blockDuration, not at the end of the window, and then counts afresh', async () => {
    const guard = new LoginGuard(kit, {
      name: 'short-lockout',
      consecutiveFailures: { points: 2, duration: '1h', blockDuration: '1s' },
    })
    for (let i = 0; i < 2; i++) (await guard.attempt('hana', '10.0.0.2')).failed()
    const locked = await guard.attempt('hana', '10.0.0.2')
    expect(locked.allowed).toBe(false)
    expect(locked.retryAfterMs).toBeGreaterThan(0)
    expect(locked.retryAfterMs).toBeLessThanOrEqual(1000)
    await new Promise((r) => setTimeout(r, 1100))
    // A fresh budget of two, then locked again for blockDuration.
    for (let i = 0; i < 2; i++) {
      const again = await guard.attempt('hana', '10.0.0.2')
      expect(again.allowed).toBe(true)
      again.failed()
    }
    const relocked = await guard.attempt('hana', '10.0.0.2')
    expect(relocked.allowed).toBe(false)
    expect(relocked.retryAfterMs).toBeLessThanOrEqual(1000)
  })

  it('rejects invalid budgets at creation', () => {
    expect(() =>
      loginProtection(kit, { consecutiveFailures: { points: 0, duration: '1h', blockDuration: '1m' } }),
    ).toThrow(ConfigError)
    expect(() => loginProtection(kit, { ipv6Subnet: 200 })).toThrow(ConfigError)
  })
})
