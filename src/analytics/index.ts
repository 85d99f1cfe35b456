export type {
  AnalyticsStats,
  FlushResult,
  PageViewOptions,
  RangeOptions,
  RankedItem,
  RecentEvent,
  RequestSample,
  SeriesOptions,
  TopOptions,
} from './analytics.js'
export { Analytics, OTHER, visitorFingerprint } from './analytics.js'
export type { Granularity, SeriesPoint } from './buckets.js'
export type { AnalyticsOptions, ResolvedAnalyticsOptions } from './options.js'
export { ANALYTICS_DEFAULTS, resolveAnalyticsOptions } from './options.js'
export type { PrometheusExporter, PrometheusOptions } from './prometheus.js'
export { createPrometheusExporter, loadPromClient } from './prometheus.js'
