import { randomBytes } from 'node:crypto'
import express from 'express'
import { createRedkit } from 'redkit'
import {
  analytics,
  analyticsDashboard,
  health,
  idempotency,
  lockRoute,
  loginProtection,
  metrics,
  rateLimit,
  responseCache,
  session,
} from 'redkit/middleware'
import { demoRedisUrl } from './redis.js'

const { url, source } = await demoRedisUrl()
const kit = createRedkit({ redis: url, prefix: 'demo' })
kit.on('error', ({ error, connection }) => console.warn(`[redis ${connection}] ${error.message}`))

const app = express()
app.use(health(kit))

// --- analytics ---
// First in the chain so that every route below is counted (by route pattern, never the raw URL).
// GET /dashboard: live charts; GET /metrics: Prometheus text format. A real app puts both behind auth.
app.use(await metrics(kit))
app.use(analytics(kit, { skip: (req) => req.path.startsWith('/dashboard') || req.path === '/metrics' }))
app.use('/dashboard', analyticsDashboard(kit, { title: 'redkit demo analytics' }))
// --- analytics ---

app.get('/', (_req, res) => {
  res.json({
    name: 'redkit demo',
    try: {
      'GET /healthz': 'health of the shared Redis connection',
      'GET /visits': "the app's own command on kit.redis",
      'GET /slow-report': 'response cache (X-Cache: MISS, then HIT)',
      'GET /report': 'kit.cached() memoized function',
      'GET /api/quote': 'rate limited: 5 per 10 s and 100 per day, RateLimit headers',
      'POST /login': 'brute-force protection of a login form',
      'POST /payments': 'Idempotency-Key required; retries get the stored response',
      'POST /reports/:name/build': 'route lock: one build at a time across instances',
      'POST /account/login, GET /account/sessions': 'sessions with per-user control',
      'GET /dashboard, GET /metrics': 'analytics charts and Prometheus metrics',
    },
  })
})

// The app's own commands use the shared client.
app.get('/visits', async (_req, res) => {
  const visits = await kit.redis.incr(kit.keys.module('demo').key('visits'))
  res.json({ visits })
})

// --- lock ---
// POST /payments is retry-safe: send `Idempotency-Key: "<uuid>"`; a retry gets the stored response
// (marked `Idempotent-Replayed: true`), a different body with the same key gets 422.
app.post('/payments', express.json(), idempotency(kit, { required: true }), async (req, res) => {
  const id = await kit.redis.incr(kit.keys.module('demo').key('payments'))
  res.status(201).json({ id, amount: req.body?.amount ?? null, status: 'paid' })
})
// One report build at a time across instances: a second request gets 409 while one runs.
app.post(
  '/reports/:name/build',
  lockRoute(kit, { resource: (req) => `report:${req.params.name}`, ttl: '10s' }),
  async (req, res) => {
    const lock = res.locals.lock as { fence: number }
    await new Promise((r) => setTimeout(r, 2000))
    res.json({ report: req.params.name, fence: lock.fence })
  },
)
// --- lock ---

// --- response-cache ---
// A slow route behind the shared HTTP cache: the first GET takes 500 ms (X-Cache: MISS), repeats
// are served from memory or Redis (X-Cache: HIT, Age); after 10 s one request refreshes it in the
// background while others get the stale copy (X-Cache: STALE). POST /slow-report purges it.
const reportCache = responseCache(kit, { staleWhileRevalidate: '1m' })
app.use('/slow-report', reportCache)
app.get('/slow-report', async (_req, res) => {
  await new Promise((resolve) => setTimeout(resolve, 500))
  res.set('Cache-Control', 'public, max-age=10')
  res.set('Surrogate-Key', 'reports')
  res.json({ generatedAt: new Date().toISOString() })
})
app.post('/slow-report', (_req, res) => {
  res.status(204).end()
})
// --- response-cache ---

// --- rate-limit ---
// GET /api/quote: 5 per 10 s and 100 per day per client IP, checked together in one Redis round
// trip. Every answer carries RateLimit-Policy and RateLimit; past a limit: 429 problem+json with
// Retry-After. Behind a proxy, set app.set('trust proxy', ...) so req.ip is the real client.
app.get(
  '/api/quote',
  rateLimit(kit, {
    name: 'quote',
    limits: [
      { name: 'burst', points: 5, duration: '10s' },
      { name: 'daily', points: 100, duration: '1d' },
    ],
  }),
  (_req, res) => {
    res.json({ quote: 'Simplicity is prerequisite for reliability.' })
  },
)
// POST /login {"username","password"}: password "demo" succeeds (200), anything else 401. Three
// consecutive failures for one username + IP block it for a minute; a success clears them.
app.post(
  '/login',
  express.json(),
  loginProtection(kit, { consecutiveFailures: { points: 3, duration: '1h', blockDuration: '1m' } }),
  (req, res) => {
    const ok = req.body?.password === 'demo'
    res.status(ok ? 200 : 401).json({ ok })
  },
)
// --- rate-limit ---

// --- session ---
// Sessions live under /account only, so the other routes never depend on the session store.
// POST /account/login {"username"} starts a session (a new id: no session fixation), GET /account/me,
// GET /account/sessions lists "my sessions", POST /account/logout-others logs out everywhere else,
// POST /account/logout ends this one. With Redis down these answer 503 problem+json, fast.
declare module 'express-session' {
  interface SessionData {
    userId?: string
    userAgent?: string
    loginAt?: string
  }
}
let sessionSecret = process.env.SESSION_SECRET
if (!sessionSecret) {
  // Demo only: a real app must refuse to start without its secret (session() requires 32+ chars).
  sessionSecret = randomBytes(32).toString('base64url')
  console.warn(
    '[demo] SESSION_SECRET is not set: using a random secret for this run (sessions end on restart).',
  )
}
const account = express.Router()
account.use(express.json(), session(kit, { secret: sessionSecret, cookie: { maxAge: 7 * 86_400_000 } }))
account.post('/login', (req, res, next) => {
  const username = typeof req.body?.username === 'string' ? req.body.username.trim() : ''
  if (!username) {
    res.status(400).json({ error: 'send {"username": "..."}' })
    return
  }
  // Regenerate before storing the user: an id planted in the browser before login is worthless after.
  req.session.regenerate((error) => {
    if (error) return next(error)
    req.session.userId = username
    req.session.userAgent = req.get('user-agent') ?? 'unknown'
    req.session.loginAt = new Date().toISOString()
    res.json({ loggedIn: username })
  })
})
account.get('/me', (req, res) => {
  if (!req.session.userId) {
    res.status(401).json({ loggedIn: false })
    return
  }
  res.json({ userId: req.session.userId, loginAt: req.session.loginAt })
})
account.get('/sessions', async (req, res) => {
  const userId = req.session.userId
  if (!userId) {
    res.status(401).json({ loggedIn: false })
    return
  }
  const sessions = await kit.sessions.listForUser(userId)
  res.json(
    sessions.map((s) => ({
      current: s.id === req.sessionID,
      userAgent: s.data.userAgent,
      loginAt: s.data.loginAt,
      expiresAt: new Date(s.expiresAt).toISOString(),
    })),
  )
})
account.post('/logout-others', async (req, res) => {
  const userId = req.session.userId
  if (!userId) {
    res.status(401).json({ loggedIn: false })
    return
  }
  const revoked = await kit.sessions.revokeAllForUser(userId, { except: req.sessionID })
  res.json({ revoked })
})
account.post('/logout', (req, res, next) => {
  req.session.destroy((error) => (error ? next(error) : res.json({ loggedIn: false })))
})
app.use('/account', account)
// --- session ---

// --- cache ---
// kit.cached(): a slow computation memoized in the cache engine, keyed by its arguments. GET
// /report?day=mon takes 300 ms once, then comes from memory (or Redis on another instance); after
// 10 s the old report is served while one background refresh runs (grace).
const buildReport = kit.cached(
  async function buildReport(day: string) {
    await new Promise((resolve) => setTimeout(resolve, 300))
    return { day, total: 10n ** 20n, generatedAt: new Date() }
  },
  { ttl: '10s', grace: '1m', tags: ['reports'] },
)
app.get('/report', async (req, res) => {
  const day = typeof req.query.day === 'string' ? req.query.day.slice(0, 32) : 'today'
  const started = performance.now()
  const report = await buildReport(day)
  res.json({
    day: report.day,
    total: report.total.toString(),
    generatedAt: report.generatedAt.toISOString(),
    tookMs: Math.round((performance.now() - started) * 100) / 100,
  })
})
// --- cache ---

const port = Number(process.env.PORT ?? 3000)
const server = app.listen(port, '127.0.0.1', () => {
  const base = `http://127.0.0.1:${port}`
  console.log(`redkit demo on ${base} (Redis: ${url}, ${source})`)
  console.log('Try:')
  console.log(`  curl -s ${base}/healthz`)
  console.log(`  curl -s ${base}/visits`)
  console.log(`  open ${base}/dashboard   # analytics charts;  curl -s ${base}/metrics   # Prometheus`)
  console.log(
    `  for i in 1 2 3 4 5 6; do curl -si ${base}/api/quote | grep -iE '^(HTTP|ratelimit|retry)'; done`,
  )
  console.log(
    `  curl -s -X POST ${base}/login -H 'Content-Type: application/json' -d '{"username":"ann","password":"nope"}'`,
  )
  console.log(
    `  curl -s -X POST ${base}/payments -H 'Idempotency-Key: "order-1"' -H 'Content-Type: application/json' -d '{"amount":10}'`,
  )
  console.log(`  curl -s -X POST ${base}/reports/daily/build & curl -s -X POST ${base}/reports/daily/build`)
  console.log(
    `  curl -s -c /tmp/redkit-demo.jar -X POST ${base}/account/login -H 'Content-Type: application/json' -d '{"username":"ann"}'`,
  )
  console.log(`  curl -s -b /tmp/redkit-demo.jar ${base}/account/sessions`)
})

async function shutdown(): Promise<void> {
  server.close()
  await kit.close()
  process.exit(0)
}
process.on('SIGINT', shutdown)
process.on('SIGTERM', shutdown)
