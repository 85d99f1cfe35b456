import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { Router } from 'express'
import type { Duration, Redkit, SeriesPoint } from '../src/index.js'
import { ConfigError, isConnectionError, parseDuration } from '../src/index.js'
import { DASHBOARD_SCRIPT, dashboardHtml } from './analytics-dashboard-page.js'
import { sendUnavailable } from './problem.js'

/** Options of {@link analyticsDashboard}. */
export interface AnalyticsDashboardOptions {
  /**
   * Title of the page.
   * @default 'redkit analytics'
   */
  title?: string
  /**
   * How often the page fetches fresh numbers.
   * @default 5000
   */
  refresh?: Duration
}

/** What the dashboard's `/data` endpoint returns. */
export interface DashboardData {
  generatedAt: number
  tiles: {
    requestsToday: number
    uniquesToday: number
    avgLatencyMsToday: number | null
    serverErrorsToday: number
    cacheHitRatioToday: number | null
    pending: number
    dropped: number
  }
  /** Per minute, last hour: bucket starts and requests per status class. */
  requests: { t: number[]; '2xx': number[]; '3xx': number[]; '4xx': number[]; '5xx': number[] }
  statusToday: Record<string, number>
  topRoutes: Array<{ path: string; count: number }>
  topPages: Array<{ path: string; count: number }>
  /** Unique visitors per day, last 7 days. */
  uniques: SeriesPoint[]
  cache: { hit: number[]; miss: number[]; ratio: Array<number | null> }
  rateLimit: { blocked: number[] }
  locks: { waits: number[]; waitedMs: number[] }
}

const DAY = 86_400_000

/** Reads Chart.js's browser bundle from the installed package (no CDN). */
function chartJsBundle(): Buffer {
  try {
    const require = createRequire(import.meta.url)
    const main = require.resolve('chart.js')
    return readFileSync(join(dirname(main), 'chart.umd.min.js'))
  } catch (error) {
    throw new ConfigError(
      'analyticsDashboard',
      'needs the optional peer dependency chart.js, which could not be found',
      'run `npm install chart.js` (version 4)',
      { cause: error },
    )
  }
}

/** Gathers everything the page draws, in one parallel batch of reads. */
export async function dashboardData(kit: Redkit): Promise<DashboardData> {
  const a = kit.analytics
  const now = Date.now()
  const minute = { granularity: 'minute' as const, from: now - 59 * 60_000, to: now }
  const values = (points: SeriesPoint[]) => points.map((p) => p.value)
  const [stats, s2, s3, s4, s5, hit, miss, blocked, waits, waitedMs, topRoutes, topPages, ...uniques] =
    await Promise.all([
      a.stats(),
      a.series('status.2xx', minute),
      a.series('status.3xx', minute),
      a.series('status.4xx', minute),
      a.series('status.5xx', minute),
      a.series('cache.hit', minute),
      a.series('cache.miss', minute),
      a.series('ratelimit.blocked', minute),
      a.series('lock.wait', minute),
      a.series('lock.wait.ms', minute),
      a.topRoutes({ limit: 10 }),
      a.topPages({ limit: 10 }),
      ...Array.from({ length: 7 }, (_, i) => {
        const t = now - (6 - i) * DAY
        return a.uniques('pageviews', { from: t, to: t })
      }),
    ])
  const today = stats.today
  const n = (metric: string) => today[metric] ?? 0
  const lookups = n('cache.hit') + n('cache.miss')
  const hits = values(hit)
  const misses = values(miss)
  const dayStart = now - (now % DAY)
  return {
    generatedAt: now,
    tiles: {
      requestsToday: n('requests'),
      uniquesToday: stats.uniquesToday,
      avgLatencyMsToday: n('requests') > 0 ? n('latency.ms') / n('requests') : null,
      serverErrorsToday: n('status.5xx'),
      cacheHitRatioToday: lookups > 0 ? n('cache.hit') / lookups : null,
      pending: stats.writer.pending,
      dropped: stats.writer.dropped,
    },
    requests: {
      t: s2.map((p) => p.t),
      '2xx': values(s2),
      '3xx': values(s3),
      '4xx': values(s4),
      '5xx': values(s5),
    },
    statusToday: Object.fromEntries(
      ['1xx', '2xx', '3xx', '4xx', '5xx'].map((c) => [c, n(`status.${c}`)]).filter(([, v]) => Number(v) > 0),
    ),
    topRoutes,
    topPages,
    uniques: (uniques as number[]).map((value, i) => ({ t: dayStart - (6 - i) * DAY, value })),
    cache: {
      hit: hits,
      miss: misses,
      ratio: hits.map((h, i) => {
        const total = h + (misses[i] ?? 0)
        return total > 0 ? h / total : null
      }),
    },
    rateLimit: { blocked: values(blocked) },
    locks: { waits: values(waits), waitedMs: values(waitedMs) },
  }
}

/**
 * A router serving the analytics dashboard: charts of requests over time by status class, status
 * classes, top routes and pages, unique visitors per day, cache hit ratio, rate-limit rejections
 * and lock waits, refreshed every few seconds. Chart.js is served from the installed package.
 * The page shows traffic figures: mount it behind your own authentication.
 *
 * @example
 * app.use('/dashboard', requireAdmin, analyticsDashboard(kit))
 */
export function analyticsDashboard(kit: Redkit, options: AnalyticsDashboardOptions = {}): Router {
  const title = options.title ?? 'redkit analytics'
  if (typeof title !== 'string')
    throw new ConfigError('analyticsDashboard.title', 'must be a string', "write 'Shop'")
  const refreshMs = parseDuration(options.refresh ?? 5000, 'analyticsDashboard.refresh')
  if (refreshMs < 500) {
    throw new ConfigError(
      'analyticsDashboard.refresh',
      `must be at least 500 ms, got ${refreshMs}`,
      "write '5s'",
    )
  }
  const chartJs = chartJsBundle()
  // Count the modules' events from the start, not from the first page load.
  void kit.analytics
  const router = Router()
  router.get('/', (req, res) => {
    res.setHeader('Content-Type', 'text/html; charset=utf-8')
    res.setHeader('Cache-Control', 'no-store')
    res.setHeader(
      'Content-Security-Policy',
      "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:",
    )
    res.end(dashboardHtml(req.baseUrl, title, refreshMs))
  })
  router.get('/assets/chart.umd.min.js', (_req, res) => {
    res.setHeader('Content-Type', 'text/javascript; charset=utf-8')
    res.setHeader('Cache-Control', 'public, max-age=86400')
    res.end(chartJs)
  })
  router.get('/assets/dashboard.js', (_req, res) => {
    res.setHeader('Content-Type', 'text/javascript; charset=utf-8')
    res.setHeader('Cache-Control', 'no-cache')
    res.end(DASHBOARD_SCRIPT)
  })
  router.get('/data', async (_req, res, next) => {
    try {
      const data = await dashboardData(kit)
      res.setHeader('Cache-Control', 'no-store')
      res.json(data)
    } catch (error) {
      if (!isConnectionError(error)) return next(error)
      sendUnavailable(
        res,
        'Analytics unavailable',
        'Redis cannot answer right now; the dashboard retries by itself.',
      )
    }
  })
  return router
}
