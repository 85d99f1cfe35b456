import type { Request, RequestHandler, Response } from 'express'
import type { Redkit } from '../src/index.js'
import { ConfigError } from '../src/index.js'

/** Options of {@link analytics}. */
export interface AnalyticsMiddlewareOptions {
  /**
   * Requests not to count (health checks, the dashboard, `/metrics`).
   * @default undefined (count every request)
   */
  skip?: (req: Request) => boolean
  /**
   * Count unique visitors: a SHA-256 of IP and user agent with a salt shared through Redis that
   * changes every UTC day, computed when the batch is written. Neither the IP nor the user agent
   * is stored (they stay in process memory only until the next flush).
   * @default true
   */
  visitors?: boolean
  /**
   * Route label of requests that matched no route (404s, static files): one bucket for all of
   * them, so random URLs cannot create new labels.
   * @default '(unmatched)'
   */
  unmatched?: string
}

/** Status counted for a request whose client closed the connection before the response. */
const CLIENT_CLOSED = 499

const ANALYTICS_MIDDLEWARE_DEFAULTS = { visitors: true, unmatched: '(unmatched)' }

function resolveAnalyticsMiddlewareOptions(options: AnalyticsMiddlewareOptions) {
  const resolved = {
    ...ANALYTICS_MIDDLEWARE_DEFAULTS,
    ...Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)),
  } as typeof ANALYTICS_MIDDLEWARE_DEFAULTS & AnalyticsMiddlewareOptions
  if (resolved.skip !== undefined && typeof resolved.skip !== 'function') {
    throw new ConfigError('analytics.skip', 'must be a function', 'write (req) => req.path === "/healthz"')
  }
  if (typeof resolved.visitors !== 'boolean') {
    throw new ConfigError('analytics.visitors', 'must be a boolean', 'write true or false')
  }
  if (typeof resolved.unmatched !== 'string' || resolved.unmatched.length === 0) {
    throw new ConfigError('analytics.unmatched', 'must be a non-empty string', "write '(unmatched)'")
  }
  return resolved
}

/**
 * A mount path is only known as the URL it matched (`/users/42/posts` for `/users/:id/posts`):
 * segments that look like identifiers become `:id` so that they cannot multiply route labels.
 */
const ID_SEGMENT = /^(?:\d+|[0-9a-f]{8,}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$/i

function mountPattern(baseUrl: string): string {
  if (!baseUrl) return ''
  return baseUrl
    .split('/')
    .map((segment) => (ID_SEGMENT.test(segment) ? ':id' : segment))
    .join('/')
}

/**
 * The matched route pattern of `req` (`req.baseUrl` + `req.route.path`), or null when no route
 * matched. Never the raw URL.
 */
export function routePattern(req: Request): string | null {
  const route = (req as { route?: { path?: unknown } }).route
  if (!route || route.path === undefined) return null
  const path = typeof route.path === 'string' ? route.path : String(route.path)
  const joined = mountPattern(req.baseUrl) + (path === '/' && req.baseUrl ? '' : path)
  return joined || '/'
}

/**
 * `req.ip` (which honours the app's `trust proxy` setting) parses forwarding headers on every
 * call; without any, it is the socket's address, read directly.
 */
function clientIp(req: Request): string {
  if (req.headers['x-forwarded-for'] === undefined && req.headers.forwarded === undefined) {
    return req.socket?.remoteAddress ?? ''
  }
  return req.ip ?? ''
}

/**
 * Counts every request into `kit.analytics`: by route pattern (never the raw URL; unmatched
 * requests share one bucket), method and status class, with latency and unique visitors. Works
 * after the response is sent and never waits for Redis or throws into the request; while Redis is
 * down the counts are kept in memory (bounded) and written when it returns. Also emits
 * `analytics:request`, which `metrics()` turns into Prometheus counters and histograms.
 *
 * @example
 * app.use(analytics(kit, { skip: (req) => req.path === '/healthz' }))
 */
export function analytics(kit: Redkit, options: AnalyticsMiddlewareOptions = {}): RequestHandler {
  const { skip, visitors, unmatched } = resolveAnalyticsMiddlewareOptions(options)
  const recorder = kit.analytics
  function record(req: Request, res: Response, started: number): void {
    try {
      const durationMs = performance.now() - started
      const route = routePattern(req) ?? unmatched
      // A client that went away before the answer: 499 (as proxies log it), not the default 200,
      // so it is neither a success nor a page view.
      const status = res.writableEnded ? res.statusCode : CLIENT_CLOSED
      recorder.request({
        route,
        method: req.method,
        status,
        durationMs,
        // Only page views count visitors; hashed with the day's salt before anything is written
        // (raw only in process memory until then).
        fingerprint:
          visitors && req.method === 'GET' && status < 400
            ? `${clientIp(req)}\n${req.headers['user-agent'] ?? ''}`
            : undefined,
      })
      if (kit.events.has('analytics:request')) {
        kit.events.emit('analytics:request', { route, method: req.method, status, durationMs })
      }
    } catch (error) {
      // Counting must never break a response; report it like any other kit error.
      kit.events.emit('error', { error: error as Error, connection: 'analytics' })
    }
  }
  return function analyticsMiddleware(req, res, next) {
    if (skip?.(req)) return next()
    const started = performance.now()
    // 'close' follows 'finish' and also fires when the client goes away first: counted once.
    // State lives in this closure, not on `res`: a new property on the response object slows
    // every later property access of Express and Node on it.
    res.on('close', () => record(req, res, started))
    next()
  }
}
