import type { Counter, Histogram, Registry } from 'prom-client'
import { ConfigError } from '../errors.js'
import type { RedkitEventName } from '../events.js'
import type { Redkit } from '../kit.js'

/** Options of {@link createPrometheusExporter} (and of the `metrics()` middleware). */
export interface PrometheusOptions {
  /**
   * Registry to add the metrics to (share one with the app's own metrics).
   * @default a new prom-client `Registry`
   */
  registry?: Registry
  /**
   * Prefix of every metric name.
   * @default 'redkit_'
   */
  prefix?: string
  /**
   * Distinct values one label may take (routes, cache names, rate-limit policies); later values
   * are reported as `(other)`, so a flood of new routes cannot blow up the time series count.
   * @default 100
   */
  maxLabelValues?: number
  /**
   * Also collect prom-client's default Node.js metrics (event loop lag, heap, GC) in the registry.
   * @default false
   */
  defaultMetrics?: boolean
  /**
   * Buckets (seconds) of the request latency histogram.
   * @default [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
   */
  buckets?: number[]
}

/** Prometheus metrics of a kit, fed by its events. */
export interface PrometheusExporter {
  readonly registry: Registry
  /** Text exposition format of every metric of the registry. */
  metrics(): Promise<string>
  /** `Content-Type` of {@link PrometheusExporter.metrics}. */
  readonly contentType: string
  /** Stops listening to the kit's events. */
  stop(): void
}

type PromClient = typeof import('prom-client')

const OTHER = '(other)'

/** Keeps at most `max` distinct values of one label. */
class BoundedLabel {
  readonly #seen = new Set<string>()
  readonly #max: number

  constructor(max: number) {
    this.#max = max
  }

  value(raw: unknown): string {
    const text = typeof raw === 'string' && raw.length > 0 ? raw.slice(0, 120) : 'unknown'
    if (this.#seen.has(text)) return text
    if (this.#seen.size >= this.#max) return OTHER
    this.#seen.add(text)
    return text
  }
}

function resolvePrometheusOptions(options: PrometheusOptions) {
  const prefix = options.prefix ?? 'redkit_'
  if (!/^[a-zA-Z_:][a-zA-Z0-9_:]*$/.test(prefix)) {
    throw new ConfigError(
      'metrics.prefix',
      `is not a valid metric name prefix: ${JSON.stringify(prefix)}`,
      "write 'redkit_'",
    )
  }
  const maxLabelValues = options.maxLabelValues ?? 100
  if (!Number.isInteger(maxLabelValues) || maxLabelValues < 1) {
    throw new ConfigError('metrics.maxLabelValues', 'must be a positive integer', 'write 100')
  }
  const buckets = options.buckets ?? [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
  if (
    !Array.isArray(buckets) ||
    buckets.length === 0 ||
    buckets.some((b) => typeof b !== 'number' || b <= 0)
  ) {
    throw new ConfigError(
      'metrics.buckets',
      'must be a non-empty array of positive seconds',
      'write [0.01, 0.1, 1]',
    )
  }
  return { prefix, maxLabelValues, buckets, defaultMetrics: options.defaultMetrics ?? false }
}

/** Loads prom-client, an optional peer dependency, or explains how to install it. */
export async function loadPromClient(
  importer: () => Promise<unknown> = () => import('prom-client'),
): Promise<PromClient> {
  try {
    const mod = (await importer()) as PromClient & { default?: PromClient }
    return mod.Registry ? mod : (mod.default as PromClient)
  } catch (error) {
    throw new ConfigError(
      'metrics',
      'needs the optional peer dependency prom-client, which could not be loaded',
      'run `npm install prom-client` (version 15)',
      { cause: error },
    )
  }
}

/**
 * Prometheus metrics of the kit: HTTP requests and latency by route (from the `analytics()`
 * middleware), the cache, rate-limit and lock modules' events, and Redis command latency (the
 * kit's `command` event). prom-client is loaded lazily; without it this rejects with `ConfigError`.
 *
 * @example
 * const exporter = await createPrometheusExporter(kit)
 * const text = await exporter.metrics()
 */
export async function createPrometheusExporter(
  kit: Redkit,
  options: PrometheusOptions = {},
  importer?: () => Promise<unknown>,
): Promise<PrometheusExporter> {
  const o = resolvePrometheusOptions(options)
  const prom = await loadPromClient(importer)
  const registry = options.registry ?? new prom.Registry()
  if (o.defaultMetrics) prom.collectDefaultMetrics({ register: registry, prefix: o.prefix })
  const p = o.prefix
  const routes = new BoundedLabel(o.maxLabelValues)
  const caches = new BoundedLabel(o.maxLabelValues)
  const policies = new BoundedLabel(o.maxLabelValues)
  const registers = [registry]

  const requests: Counter<'route' | 'method' | 'status_class'> = new prom.Counter({
    name: `${p}http_requests_total`,
    help: 'HTTP requests by route pattern, method and status class.',
    labelNames: ['route', 'method', 'status_class'],
    registers,
  })
  const latency: Histogram<'route' | 'method'> = new prom.Histogram({
    name: `${p}http_request_duration_seconds`,
    help: 'HTTP request latency by route pattern and method.',
    labelNames: ['route', 'method'],
    buckets: o.buckets,
    registers,
  })
  const cache = new prom.Counter({
    name: `${p}cache_events_total`,
    help: 'Cache lookups and their outcome (hit, miss, stale, bypass) by cache.',
    labelNames: ['cache', 'result'],
    registers,
  })
  const rateLimit = new prom.Counter({
    name: `${p}ratelimit_requests_total`,
    help: 'Rate-limited requests by policy and result (allowed, blocked).',
    labelNames: ['policy', 'result'],
    registers,
  })
  const locks = new prom.Counter({
    name: `${p}lock_events_total`,
    help: 'Lock events: acquired, busy, wait, lost.',
    labelNames: ['event'],
    registers,
  })
  const lockWait = new prom.Histogram({
    name: `${p}lock_wait_seconds`,
    help: 'Time spent waiting for a lock.',
    buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5],
    registers,
  })
  const commands = new prom.Histogram({
    name: `${p}redis_command_duration_seconds`,
    help: 'Latency of Redis operations run by the kit modules, by outcome.',
    labelNames: ['ok'],
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
    registers,
  })
  new prom.Gauge({
    name: `${p}analytics_pending_entries`,
    help: 'Analytics writes waiting in memory for the next flush.',
    registers,
    collect() {
      this.set(kit.analytics.writer.pending)
    },
  })
  new prom.Gauge({
    name: `${p}analytics_dropped_total`,
    help: 'Analytics recordings dropped because the in-memory bound was reached while Redis was down.',
    registers,
    collect() {
      this.set(kit.analytics.writer.dropped)
    },
  })

  const children = new Map<string, { count: { inc(): void }; latency: { observe(value: number): void } }>()
  const off: Array<() => void> = []
  // Other modules' events are listened to by name: they declare their own payload types.
  const on = (event: string, listener: (payload: Record<string, unknown>) => void) =>
    off.push(kit.events.on(event as RedkitEventName, listener as never))

  off.push(
    kit.events.on('analytics:request', ({ route, method, status, durationMs }) => {
      // Bound children per label set: prom-client would otherwise hash the labels on every call.
      const id = `${route}\0${method}\0${status}`
      let child = children.get(id)
      if (!child) {
        const r = routes.value(route)
        const m = method.length <= 10 ? method : 'OTHER'
        child = {
          count: requests.labels({ route: r, method: m, status_class: `${Math.floor(status / 100)}xx` }),
          latency: latency.labels({ route: r, method: m }),
        }
        // Route values past the bound all share one child; keep the map bounded the same way.
        if (children.size < o.maxLabelValues * 20) children.set(id, child)
      }
      child.count.inc()
      child.latency.observe(durationMs / 1000)
    }),
    kit.events.on('command', ({ durationMs, ok }) => commands.observe({ ok: String(ok) }, durationMs / 1000)),
  )
  for (const result of ['hit', 'miss', 'stale', 'bypass'] as const) {
    on(`cache:${result}`, (payload) => cache.inc({ cache: caches.value(payload?.cache), result }))
  }
  for (const result of ['allowed', 'blocked'] as const) {
    on(`ratelimit:${result}`, (payload) => rateLimit.inc({ policy: policies.value(payload?.policy), result }))
  }
  for (const event of ['acquired', 'busy', 'wait', 'lost'] as const) {
    on(`lock:${event}`, (payload) => {
      locks.inc({ event })
      const waited = Number(payload?.waitedMs)
      if (event === 'wait' && Number.isFinite(waited)) lockWait.observe(waited / 1000)
    })
  }

  return {
    registry,
    contentType: registry.contentType,
    metrics: () => registry.metrics(),
    stop() {
      for (const remove of off.splice(0)) remove()
    },
  }
}
