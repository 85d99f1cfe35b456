/**
 * HTTP cases of the rate-limit bench, built in the pinned server process by bench/lib/serve.ts.
 * Every app answers GET / with the same small JSON body; all requests come from one client
 * address, so every case counts one key.
 */
import express, { type RequestHandler } from 'express'
import { rateLimit as expressRateLimit } from 'express-rate-limit'
import { Redis } from 'ioredis'
import { RedisStore } from 'rate-limit-redis'
import { RateLimiterRedis, RateLimiterRes } from 'rate-limiter-flexible'
import { rateLimit } from '../middleware/index.js'
import { createRedkit } from '../src/index.js'
import type { BuiltCase } from './lib/http.js'

const BODY = { ok: true, items: [1, 2, 3] }
/** High enough that every request of a run is allowed. */
const HIGH = 1_000_000_000

interface Context {
  url: string
  prefix: string
}

function appWith(middleware: RequestHandler | null, counts: { handled: number }) {
  const app = express()
  app.set('etag', false)
  if (middleware) app.use(middleware)
  app.get('/', (_req, res) => {
    counts.handled++
    res.json(BODY)
  })
  return app
}

/** Counts responses by status, to prove what a run measured. */
function statusCounter(counts: Record<string, number>): RequestHandler {
  return function countStatus(_req, res, next) {
    res.once('finish', () => {
      const key = String(res.statusCode)
      counts[key] = (counts[key] ?? 0) + 1
    })
    next()
  }
}

function redkitCase(
  limits: Array<{ name: string; points: number; duration: string }>,
  extra: { blockDuration?: string; headers?: boolean } = {},
) {
  return async (context: Record<string, unknown>): Promise<BuiltCase> => {
    const { url, prefix } = context as unknown as Context
    const kit = createRedkit({ redis: url, prefix, configFile: false, env: {} })
    const counts = { handled: 0 }
    const statuses: Record<string, number> = {}
    const app = express()
    app.set('etag', false)
    app.use(statusCounter(statuses))
    app.use(rateLimit(kit, { name: 'bench', limits, ...extra }))
    app.get('/', (_req, res) => {
      counts.handled++
      res.json(BODY)
    })
    return {
      app,
      close: () => kit.close(),
      check: () => ({ handled: counts.handled, statuses }),
    }
  }
}

function rlflxCase(points: number) {
  return async (context: Record<string, unknown>): Promise<BuiltCase> => {
    const { url, prefix } = context as unknown as Context
    // Same client settings as the kit's command connection: auto-pipelining and a command timeout.
    const redis = new Redis(url, { enableAutoPipelining: true, commandTimeout: 1000 })
    const limiter = new RateLimiterRedis({
      storeClient: redis,
      keyPrefix: `${prefix}:rlflx`,
      points,
      duration: 60,
    })
    const counts = { handled: 0 }
    const statuses: Record<string, number> = {}
    const app = express()
    app.set('etag', false)
    app.use(statusCounter(statuses))
    // The minimal middleware rate-limiter-flexible's README shows: consume, 429 on rejection.
    app.use(function rlflxMiddleware(req, res, next) {
      limiter.consume(req.ip ?? 'unknown').then(
        () => next(),
        (rejection: unknown) => {
          if (rejection instanceof RateLimiterRes) res.status(429).send('Too Many Requests')
          else next(rejection)
        },
      )
    })
    app.get('/', (_req, res) => {
      counts.handled++
      res.json(BODY)
    })
    return {
      app,
      close: async () => void (await redis.quit()),
      check: () => ({ handled: counts.handled, statuses }),
    }
  }
}

export const cases: Record<string, (context: Record<string, unknown>) => Promise<BuiltCase>> = {
  async express() {
    const counts = { handled: 0 }
    return { app: appWith(null, counts), check: () => ({ handled: counts.handled }) }
  },

  async 'express + ioredis GET'(context) {
    const { url, prefix } = context as unknown as Context
    const redis = new Redis(url, { enableAutoPipelining: true, commandTimeout: 1000 })
    await redis.set(`${prefix}:get`, JSON.stringify(BODY))
    const counts = { handled: 0 }
    const app = express()
    app.set('etag', false)
    app.get('/', async (_req, res) => {
      counts.handled++
      res.type('json').send(await redis.get(`${prefix}:get`))
    })
    return { app, close: async () => void (await redis.quit()), check: () => ({ handled: counts.handled }) }
  },

  'rlflx consume()': rlflxCase(HIGH),
  'redkit rateLimit, 1 limit': redkitCase([{ name: 'minute', points: HIGH, duration: '1m' }]),
  // Same check without the two RateLimit header fields, to show what writing them costs.
  'redkit rateLimit, 1 limit, no headers': redkitCase([{ name: 'minute', points: HIGH, duration: '1m' }], {
    headers: false,
  }),
  'redkit rateLimit, 2 limits': redkitCase([
    { name: 'second', points: HIGH, duration: '1s' },
    { name: 'day', points: HIGH, duration: '1d' },
  ]),

  async 'express-rate-limit + rate-limit-redis'(context) {
    const { url, prefix } = context as unknown as Context
    const redis = new Redis(url, { enableAutoPipelining: true, commandTimeout: 1000 })
    const counts = { handled: 0 }
    const statuses: Record<string, number> = {}
    const app = express()
    app.set('etag', false)
    app.use(statusCounter(statuses))
    app.use(
      expressRateLimit({
        windowMs: 60_000,
        limit: HIGH,
        standardHeaders: 'draft-8',
        legacyHeaders: false,
        store: new RedisStore({
          prefix: `${prefix}:erl:`,
          sendCommand: (command: string, ...args: string[]) =>
            redis.call(command, ...args) as Promise<number | string | (number | string)[]>,
        }),
      }),
    )
    app.get('/', (_req, res) => {
      counts.handled++
      res.json(BODY)
    })
    return {
      app,
      close: async () => void (await redis.quit()),
      check: () => ({ handled: counts.handled, statuses }),
    }
  },

  // Rejected paths (every request after the first is answered 429).
  'rlflx consume(), rejected': rlflxCase(1),
  'redkit rateLimit, rejected': redkitCase([{ name: 'minute', points: 1, duration: '1m' }]),
  'redkit rateLimit, blocked (from memory)': redkitCase([{ name: 'minute', points: 1, duration: '1m' }], {
    blockDuration: '10m',
  }),
}
