import type { RequestHandler } from 'express'
import type { Redkit } from '../src/index.js'
import { ConfigError } from '../src/index.js'

/** Options of {@link health}. */
export interface HealthOptions {
  /**
   * Path answered by the middleware (GET and HEAD); other requests pass through.
   * @default '/healthz'
   */
  path?: string
  /**
   * Include the details of `kit.health()` (role, latency, master address) in the body; turn off
   * when the endpoint is public and the topology should not be disclosed.
   * @default true
   */
  details?: boolean
}

const HEALTH_DEFAULTS: Required<HealthOptions> = { path: '/healthz', details: true }

function resolveHealthOptions(options: HealthOptions): Required<HealthOptions> {
  const resolved = {
    ...HEALTH_DEFAULTS,
    ...Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)),
  }
  if (typeof resolved.path !== 'string' || !resolved.path.startsWith('/')) {
    throw new ConfigError(
      'health.path',
      `must be a path starting with '/', got ${JSON.stringify(resolved.path)}`,
      "write '/healthz'",
    )
  }
  if (typeof resolved.details !== 'boolean') {
    throw new ConfigError('health.details', 'must be a boolean', 'write true or false')
  }
  return resolved
}

/**
 * Health endpoint: JSON with status 200 when Redis answers a PING within the command timeout,
 * 503 when it does not. Never cached.
 *
 * @example
 * app.use(health(kit)) // GET /healthz -> { "status": "ok", "kind": "sentinel", ... }
 */
export function health(kit: Redkit, options: HealthOptions = {}): RequestHandler {
  const { path, details } = resolveHealthOptions(options)
  return async function healthMiddleware(req, res, next) {
    if (req.path !== path || (req.method !== 'GET' && req.method !== 'HEAD')) return next()
    const report = await kit.health()
    const body = details ? report : { status: report.status }
    res.status(report.status === 'ok' ? 200 : 503)
    res.setHeader('Cache-Control', 'no-store')
    res.json(body)
  }
}
