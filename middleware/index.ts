export type { AnalyticsMiddlewareOptions } from './analytics.js'
export { analytics, routePattern } from './analytics.js'
export type { AnalyticsDashboardOptions, DashboardData } from './analytics-dashboard.js'
export { analyticsDashboard, dashboardData } from './analytics-dashboard.js'
export type { HealthOptions } from './health.js'
export { health } from './health.js'
export type { IdempotencyOptions } from './idempotency.js'
export {
  defaultFingerprint,
  idempotency,
  MAX_IDEMPOTENCY_KEY_LENGTH,
  parseIdempotencyKey,
} from './idempotency.js'
export type { LockRouteOptions } from './lock.js'
export { lockRoute } from './lock.js'
export type { MetricsOptions } from './metrics.js'
export { metrics } from './metrics.js'
export type { Problem } from './problem.js'
export { sendProblem, sendUnavailable } from './problem.js'
export type { LoginProtectionOptions, RateLimitKey, RateLimitOptions } from './rate-limit.js'
export { loginProtection, rateLimit } from './rate-limit.js'
export type { ResponseCacheMiddleware, ResponseCacheOptions } from './response-cache.js'
export { purgeUrl, responseCache } from './response-cache.js'
export type { RedisSessionStoreOptions, SessionOptions } from './session.js'
export { RedisSessionStore, session } from './session.js'
