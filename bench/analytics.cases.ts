/**
 * HTTP cases of the analytics bench, built in the pinned server process by bench/lib/serve.ts:
 * a hello-world route, bare, with only a middleware layer and a `close` listener, with only the reads
 * the middleware makes, and with the `analytics()` middleware (and with `/metrics` listening).
 */
import express from 'express'
import { analytics, routePattern } from '../middleware/analytics.js'
import { metrics } from '../middleware/metrics.js'
import { createRedkit } from '../src/index.js'
import type { BuiltCase } from './lib/http.js'

interface Context {
  url: string
  prefix: string
}

function hello(counter: { handled: number }) {
  return (_req: express.Request, res: express.Response) => {
    counter.handled++
    res.send('hello world')
  }
}

async function withAnalytics(context: Record<string, unknown>, prometheus: boolean): Promise<BuiltCase> {
  const { url, prefix } = context as unknown as Context
  const kit = createRedkit({ redis: url, prefix, configFile: false, env: {} })
  const counter = { handled: 0 }
  const app = express()
  if (prometheus) app.use(await metrics(kit))
  app.use(analytics(kit))
  app.get('/hello', hello(counter))
  return {
    app,
    close: () => kit.close(),
    async check() {
      await kit.analytics.flush()
      const stats = await kit.analytics.stats()
      // Every handled request (warm-up included) reached Redis, in few flushes.
      return {
        handled: counter.handled,
        countedInRedis: stats.totals.requests ?? 0,
        flushes: stats.writer.flushes,
        dropped: stats.writer.dropped,
      }
    },
  }
}

/**
 * What any middleware that sees a response end costs before it reads anything: one more Express
 * layer and a `close` listener per request.
 */
async function listenerOnly(): Promise<BuiltCase> {
  const counter = { handled: 0 }
  let closed = 0
  const app = express()
  app.use((_req, res, next) => {
    res.on('close', () => {
      closed++
    })
    next()
  })
  app.get('/hello', hello(counter))
  return { app, check: () => ({ handled: counter.handled, closed }) }
}

/**
 * The floor of any such middleware: on the response's `close`, read what `analytics()` reads (route
 * pattern, status, latency, IP and user agent) and keep only the last of it. No counting, no Redis.
 */
async function readsOnly(): Promise<BuiltCase> {
  const counter = { handled: 0 }
  let last: unknown
  const app = express()
  app.use((req, res, next) => {
    const started = performance.now()
    res.on('close', () => {
      last = {
        route: routePattern(req),
        method: req.method,
        status: res.statusCode,
        durationMs: performance.now() - started,
        client: `${req.socket.remoteAddress}\n${req.headers['user-agent'] ?? ''}`,
      }
    })
    next()
  })
  app.get('/hello', hello(counter))
  return { app, check: () => ({ handled: counter.handled, read: typeof last === 'object' }) }
}

export const cases: Record<string, (context: Record<string, unknown>) => Promise<BuiltCase>> = {
  async express() {
    const counter = { handled: 0 }
    const app = express()
    app.get('/hello', hello(counter))
    return { app, check: () => ({ handled: counter.handled }) }
  },
  'express + listener only': listenerOnly,
  'express + reads only': readsOnly,
  'express + analytics()': (context) => withAnalytics(context, false),
  'express + analytics() + metrics()': (context) => withAnalytics(context, true),
}
