import { request as httpRequest, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import express from 'express'
import request from 'supertest'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { lockRoute } from '../../middleware/index.js'
import { ConfigError, createRedkit, type Lock, LockLostError, type Redkit } from '../../src/index.js'
import { type StandaloneRedis, startRedis, uniquePrefix } from '../helpers/redis-server.js'

const prefix = uniquePrefix('lockroute')
let redis: StandaloneRedis
let kit: Redkit

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

beforeAll(async () => {
  redis = await startRedis()
  kit = createRedkit({ redis: redis.url, prefix, configFile: false, env: {} })
})
afterAll(async () => {
  await kit?.close()
  await redis?.stop()
})

async function until(condition: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('condition not met in time')
    await sleep(10)
  }
}

async function listen(a: express.Express): Promise<Server> {
  const server = a.listen(0, '127.0.0.1')
  await new Promise((r) => server.once('listening', r))
  return server
}

function close(server: Server): Promise<void> {
  server.closeAllConnections()
  return new Promise((r) => server.close(() => r()))
}

/**
 * POSTs to `path` and resolves with the status. With `abort` (ms, or a promise) the client goes
 * away after that long (a proxy timeout): 'aborted'. A connection the server drops: 'reset'.
 */
function post(
  server: Server,
  path: string,
  abort?: number | Promise<void>,
): Promise<number | 'aborted' | 'reset'> {
  const { port } = server.address() as AddressInfo
  return new Promise((resolve) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, method: 'POST' }, (res) => {
      res.resume()
      res.once('end', () => resolve(res.statusCode ?? 0))
    })
    req.once('error', () => resolve(abort === undefined ? 'reset' : 'aborted'))
    if (typeof abort === 'number') setTimeout(() => req.destroy(), abort)
    else abort?.then(() => req.destroy())
    req.end()
  })
}

function app(wait?: number) {
  const a = express()
  const fences: number[] = []
  a.post(
    '/orders/:id/ship',
    lockRoute(kit, { resource: (req) => `order:${req.params.id}`, ttl: '5s', wait }),
    async (_req, res) => {
      const lock = res.locals.lock as Lock
      fences.push(lock.fence)
      await sleep(200)
      res.json({ fence: lock.fence })
    },
  )
  a.post('/open', lockRoute(kit, { resource: () => null }), (_req, res) => {
    res.json({ locked: res.locals.lock !== undefined })
  })
  return { app: a, fences }
}

describe('lockRoute', () => {
  it('answers 409 problem+json with Retry-After while another request holds the resource', async () => {
    const { app: a, fences } = app()
    const first = request(a)
      .post('/orders/1/ship')
      .then((r) => r)
    // Wait until the first request is inside its handler, holding the lock.
    for (let i = 0; i < 200 && fences.length === 0; i++) await sleep(10)
    expect(fences).toHaveLength(1)
    const second = await request(a).post('/orders/1/ship')
    expect(second.status).toBe(409)
    expect(second.headers['content-type']).toMatch(/application\/problem\+json/)
    expect(Number(second.headers['retry-after'])).toBeGreaterThanOrEqual(1)
    expect((await first).status).toBe(200)
    // Released once the response ended.
    const third = await request(a).post('/orders/1/ship')
    expect(third.status).toBe(200)
    expect(third.body.fence).toBeGreaterThan((await first).body.fence)
  })

  it('waits up to `wait` for the resource instead of answering 409', async () => {
    const { app: a, fences } = app(3000)
    const responses = await Promise.all([1, 2, 3].map(() => request(a).post('/orders/2/ship')))
    expect(responses.map((r) => r.status)).toEqual([200, 200, 200])
    expect(new Set(fences).size).toBe(3)
  })

  it('keeps the resource locked while the handler still runs after its client went away', async () => {
    for (const wait of [0, 2000]) {
      let running = 0
      let max = 0
      const a = express()
      a.post(
        '/jobs/:id',
        lockRoute(kit, { resource: (req) => `job:${wait}:${req.params.id}`, ttl: '5s', wait }),
        async (_req, res) => {
          running++
          max = Math.max(max, running)
          await sleep(500)
          running--
          res.json({ ok: true })
        },
      )
      const server = await listen(a)
      try {
        const first = post(server, '/jobs/1', 100)
        await sleep(150)
        const second = await post(server, '/jobs/1')
        // With wait 0 the retry is told the resource is busy; with a wait it gets it once the
        // first handler has ended its response.
        expect(second).toBe(wait === 0 ? 409 : 200)
        expect(await first).toBe('aborted')
        await until(() => running === 0)
        expect(await post(server, '/jobs/1')).toBe(200)
        expect(max).toBe(1)
      } finally {
        await close(server)
      }
    }
  })

  it('lets the lease run out, firing lock.signal, when the client is gone and the handler outlives it', async () => {
    let closedAt = 0
    let lostAt = 0
    let reason: unknown
    let calls = 0
    const lost: unknown[] = []
    const off = kit.on('lock:lost', (p) => lost.push(p))
    const a = express()
    a.post(
      '/slow/:id',
      lockRoute(kit, { resource: (req) => `slow:${req.params.id}`, ttl: 300 }),
      async (_req, res) => {
        res.once('close', () => {
          closedAt = Date.now()
        })
        const signal = (res.locals.lock as Lock).signal
        // The first request works long past its lease; the later one answers at once.
        const workMs = calls++ === 0 ? 3000 : 0
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, workMs)
          signal.addEventListener('abort', () => {
            lostAt = Date.now()
            reason = signal.reason
            clearTimeout(timer)
            resolve()
          })
        })
        res.json({ ok: true })
      },
    )
    const server = await listen(a)
    try {
      expect(await post(server, '/slow/1', 50)).toBe('aborted')
      await until(() => lostAt > 0)
      expect(reason).toBeInstanceOf(LockLostError)
      expect(lost).toEqual([{ resource: 'slow:1' }])
      // Never held longer than one lease after the client left.
      expect(lostAt - closedAt).toBeLessThanOrEqual(300 + 50)
      expect(await post(server, '/slow/1')).toBe(200)
    } finally {
      off()
      await close(server)
    }
  })

  it('does not run the handler, and frees the lock, when the client leaves while the lease is being granted', async () => {
    let asked = false
    let ran = 0
    const granted: unknown[] = []
    const off = kit.on('lock:acquired', (p) => granted.push(p.resource))
    const a = express()
    a.post(
      '/grant/:id',
      lockRoute(kit, {
        resource: (req) => {
          asked = true
          return `grant:${req.params.id}`
        },
        ttl: '1s',
      }),
      () => {
        // Never answers: its client is gone, so nothing will end the response.
        ran++
      },
    )
    const server = await listen(a)
    let leave!: () => void
    const left = new Promise<void>((r) => {
      leave = r
    })
    try {
      // The grant is held up on a stalled server while the client goes away.
      redis.server.pause()
      const client = post(server, '/grant/1', left)
      await until(() => asked)
      await sleep(50)
      leave()
      expect(await client).toBe('aborted')
      await sleep(50)
      redis.server.resume()
      // Released as soon as it is granted, well before its 1 s lease could lapse.
      await sleep(200)
      // The lease was granted (after the client had left), then let go at once.
      expect(granted).toEqual(['grant:1'])
      expect(ran).toBe(0)
      const lock = await kit.locks.tryAcquire('grant:1', { ttl: '1s' })
      expect(lock).not.toBeNull()
      await lock?.release()
    } finally {
      off()
      redis.server.resume()
      await close(server)
    }
  })

  it('drops the connection, reports the error and frees the lock when the response cannot be ended', async () => {
    const rejections: unknown[] = []
    const onRejection = (reason: unknown) => rejections.push(reason)
    process.on('unhandledRejection', onRejection)
    const errors: Array<{ error: Error; connection: string }> = []
    const off = kit.on('error', (p) => errors.push(p))
    const a = express()
    a.post('/bad/:id', lockRoute(kit, { resource: (req) => `bad:${req.params.id}` }), (_req, res) => {
      // Node refuses it when the head is written, inside end().
      res.statusCode = 1000
      res.end('x')
    })
    const server = await listen(a)
    try {
      const answer = await Promise.race([post(server, '/bad/1'), sleep(2000).then(() => 'hung')])
      expect(answer).toBe('reset')
      expect(errors.map((e) => [e.connection, (e.error as NodeJS.ErrnoException).code])).toEqual([
        ['lock', 'ERR_HTTP_INVALID_STATUS_CODE'],
      ])
      expect(rejections).toEqual([])
      const lock = await kit.locks.tryAcquire('bad:1')
      expect(lock).not.toBeNull()
      await lock?.release()
    } finally {
      off()
      process.off('unhandledRejection', onRejection)
      await close(server)
    }
  })

  it('lets requests through unlocked when the resource function returns null', async () => {
    const { app: a } = app()
    const res = await request(a).post('/open')
    expect(res.body).toEqual({ locked: false })
  })

  it('rejects bad options at creation', () => {
    expect(() => lockRoute(kit, {} as never)).toThrow(ConfigError)
    expect(() => lockRoute(kit, { resource: () => 'x', ttl: 'later' })).toThrow(ConfigError)
  })
})
