/**
 * HTTP cases of the session bench, built in the pinned server process by bench/lib/serve.ts.
 * Every request carries the signed cookie of one stored session (a logged-in user). On `/` the
 * handler reads it without changing it, so express-session loads the session and then touches
 * it; on `/write` it changes one field, so the session is saved.
 */
import { createHmac } from 'node:crypto'
import RedisStore from 'connect-redis'
import express, { type RequestHandler } from 'express'
import expressSession, { type Store } from 'express-session'
import { Redis } from 'ioredis'
import { RedisSessionStore, session } from '../middleware/index.js'
import { createRedkit } from '../src/index.js'
import type { BuiltCase } from './lib/http.js'

export const SECRET = 'bench-secret-0123456789-abcdefghijklmnop'
export const SESSION_ID = 'bench-session-0123456789abcdef'
export const COOKIE_NAME = 'sid'

/** The Cookie header every request sends: `sid=s:<id>.<HMAC-SHA256 signature>` (express-session's format). */
export function sessionCookie(): string {
  const signature = createHmac('sha256', SECRET).update(SESSION_ID).digest('base64').replace(/=+$/, '')
  return `${COOKIE_NAME}=${encodeURIComponent(`s:${SESSION_ID}.${signature}`)}`
}

const BODY = { ok: true, items: [1, 2, 3] }
const HOUR = 3_600_000

interface Context {
  url: string
  prefix: string
}

interface Counts {
  /** Responses by status (a 503 means a session command missed the 1 s timeout). */
  statuses: Record<string, number>
  handled: number
  withSession: number
  /** express-session's touch() calls (for redkit the extension already travelled with the read). */
  touches: number
  saves: number
}

function storedSession() {
  return {
    cookie: { originalMaxAge: HOUR, expires: new Date(Date.now() + HOUR), httpOnly: true, path: '/' },
    userId: 'bench-user',
    views: 7,
    cart: { items: [1, 2, 3], total: 42 },
  }
}

/** Counts touch and set calls of a store instance, and seeds the benchmarked session. */
async function prepare(store: Store, counts: Counts): Promise<void> {
  await new Promise<void>((resolve, reject) =>
    store.set(SESSION_ID, storedSession() as never, (error?: unknown) => (error ? reject(error) : resolve())),
  )
  const touch = store.touch?.bind(store)
  const set = store.set.bind(store)
  if (touch) {
    store.touch = (sid, sess, cb) => {
      counts.touches++
      touch(sid, sess, cb)
    }
  }
  store.set = (sid, sess, cb) => {
    counts.saves++
    set(sid, sess, cb)
  }
}

function appWith(middleware: RequestHandler | null, counts: Counts) {
  const app = express()
  app.set('etag', false)
  app.use(function countStatus(_req, res, next) {
    res.once('finish', () => {
      counts.statuses[res.statusCode] = (counts.statuses[res.statusCode] ?? 0) + 1
    })
    next()
  })
  if (middleware) app.use(middleware)
  app.get('/', (req, res) => {
    counts.handled++
    const data = req.session as unknown as { userId?: string; views?: number } | undefined
    if (data?.userId === 'bench-user') counts.withSession++
    res.json({ ...BODY, user: data?.userId, views: data?.views })
  })
  // Changes one field of the session, so express-session saves it instead of touching it.
  app.get('/write', (req, res) => {
    counts.handled++
    const data = req.session as unknown as { userId?: string; views?: number } | undefined
    if (data?.userId === 'bench-user') counts.withSession++
    if (data) data.views = (data.views ?? 0) + 1
    res.json({ ...BODY, user: data?.userId, views: data?.views })
  })
  return app
}

/**
 * TTL extensions Redis performed since `since` (EXPIRE/PEXPIRE calls, those inside scripts
 * included): proves each request extended its session, whichever command carried it.
 */
async function expiresSince(redis: { info(section: string): Promise<string> }) {
  const read = async () => {
    const stats = await redis.info('commandstats')
    let calls = 0
    for (const m of stats.matchAll(/cmdstat_p?expire:calls=(\d+)/g)) calls += Number(m[1])
    return calls
  }
  const start = await read()
  return async () => (await read()) - start
}

const newCounts = (): Counts => ({ statuses: {}, handled: 0, withSession: 0, touches: 0, saves: 0 })
const sessionOptions = { secret: SECRET, name: COOKIE_NAME, resave: false, saveUninitialized: false }

export const cases: Record<string, (context: Record<string, unknown>) => Promise<BuiltCase>> = {
  async express() {
    const counts = newCounts()
    return { app: appWith(null, counts), check: () => ({ handled: counts.handled }) }
  },

  async 'express + ioredis GET'(context) {
    const { url, prefix } = context as unknown as Context
    const redis = new Redis(url, { enableAutoPipelining: true, commandTimeout: 1000 })
    await redis.set(`${prefix}:get`, JSON.stringify(storedSession()))
    const counts = newCounts()
    const app = express()
    app.set('etag', false)
    app.get('/', async (_req, res) => {
      counts.handled++
      const stored = JSON.parse((await redis.get(`${prefix}:get`)) ?? '{}') as { views?: number }
      res.json({ ...BODY, views: stored.views })
    })
    return { app, close: async () => void (await redis.quit()), check: () => ({ handled: counts.handled }) }
  },

  async 'connect-redis 7 (ioredis)'(context) {
    const { url, prefix } = context as unknown as Context
    // Same client settings as the kit's command connection: auto-pipelining and a command timeout.
    const redis = new Redis(url, { enableAutoPipelining: true, commandTimeout: 1000 })
    const store = new RedisStore({ client: redis, prefix: `${prefix}:sess:` })
    const counts = newCounts()
    await prepare(store, counts)
    const extensions = await expiresSince(redis)
    const app = appWith(expressSession({ ...sessionOptions, store }), counts)
    return {
      app,
      close: async () => void (await redis.quit()),
      check: async () => ({ ...counts, ttlExtensions: await extensions() }),
    }
  },

  async 'redkit RedisSessionStore in express-session'(context) {
    const { url, prefix } = context as unknown as Context
    const kit = createRedkit({ redis: url, prefix, configFile: false, env: {} })
    const store = new RedisSessionStore({ kit })
    const counts = newCounts()
    await prepare(store, counts)
    const extensions = await expiresSince(kit.redis)
    const app = appWith(expressSession({ ...sessionOptions, store }), counts)
    return {
      app,
      close: () => kit.close(),
      check: async () => ({ ...counts, ttlExtensions: await extensions() }),
    }
  },

  async 'redkit session()'(context) {
    const { url, prefix } = context as unknown as Context
    const kit = createRedkit({ redis: url, prefix, configFile: false, env: {} })
    const store = new RedisSessionStore({ kit })
    const counts = newCounts()
    await prepare(store, counts)
    const extensions = await expiresSince(kit.redis)
    const app = appWith(session(kit, { secret: SECRET, name: COOKIE_NAME, store }), counts)
    return {
      app,
      close: () => kit.close(),
      check: async () => ({ ...counts, ttlExtensions: await extensions() }),
    }
  },
}
