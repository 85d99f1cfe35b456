import type { RequestHandler } from 'express'
import type { PrometheusOptions, Redkit } from '../src/index.js'
import { ConfigError, createPrometheusExporter } from '../src/index.js'

/** Options of {@link metrics}. */
export interface MetricsOptions extends PrometheusOptions {
  /**
   * Path answered with the Prometheus text format (GET and HEAD); other requests pass through.
   * @default '/metrics'
   */
  path?: string
}

/**
 * `/metrics` for Prometheus: request counts and latency histograms by route (with the
 * `analytics()` middleware installed), cache hits and misses, rate-limit decisions, lock waits and
 * Redis command latency, with bounded label values. prom-client is an optional peer dependency
 * loaded here on first use; without it the returned promise rejects with `ConfigError`.
 *
 * @example
 * app.use(await metrics(kit)) // GET /metrics
 */
export async function metrics(kit: Redkit, options: MetricsOptions = {}): Promise<RequestHandler> {
  const { path = '/metrics', ...prometheus } = options
  if (typeof path !== 'string' || !path.startsWith('/')) {
    throw new ConfigError(
      'metrics.path',
      `must be a path starting with '/', got ${JSON.stringify(path)}`,
      "write '/metrics'",
    )
  }
  const exporter = await createPrometheusExporter(kit, prometheus)
  // Not async: every other request passes through without allocating a promise.
  return function metricsMiddleware(req, res, next) {
    if (req.path !== path || (req.method !== 'GET' && req.method !== 'HEAD')) return next()
    exporter.metrics().then(
      (body) => {
        res.setHeader('Content-Type', exporter.contentType)
        res.setHeader('Cache-Control', 'no-store')
        res.end(req.method === 'HEAD' ? undefined : body)
      },
      (error: unknown) => next(error),
    )
  }
}
