import express from 'express'
import { createRedkit } from 'redkit'
import { health, idempotency, lockRoute, loginProtection, rateLimit, responseCache } from 'redkit/middleware'
import { demoRedisUrl } from './redis.js'

const { url, source } = await demoRedisUrl()
const kit = createRedkit({ redis: url, prefix: 'demo' })
kit.on('error', ({ error, connection }) => console.warn(`[redis ${connection}] ${error.message}`))

const app = express()
app.use(health(kit))

app.get('/', (_req, res) => {
  res.json({ name: 'redkit demo', try: ['/healthz', '/visits'] })
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

const port = Number(process.env.PORT ?? 3000)
const server = app.listen(port, '127.0.0.1', () => {
  const base = `http://127.0.0.1:${port}`
  console.log(`redkit demo on ${base} (Redis: ${url}, ${source})`)
  console.log('Try:')
  console.log(`  curl -s ${base}/healthz`)
  console.log(`  curl -s ${base}/visits`)
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
})

async function shutdown(): Promise<void> {
  server.close()
  await kit.close()
  process.exit(0)
}
process.on('SIGINT', shutdown)
process.on('SIGTERM', shutdown)
