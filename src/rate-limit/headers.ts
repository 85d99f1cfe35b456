import type { RateLimitResult } from './policy.js'

/**
 * The `RateLimit` field value for a result: one Service Limit Item per limit,
 * `"name";r=<remaining>;t=<seconds until the window ends>`.
 * Draft-ietf-httpapi-ratelimit-headers-11 §4.1: r is the available quota, t the effective window in
 * whole seconds (a non-negative Integer, like delay-seconds), so a partial second is rounded up.
 *
 * @example
 * rateLimitField(result) // '"per-second";r=9;t=1, "daily";r=999;t=86400'
 */
export function rateLimitField(result: RateLimitResult): string {
  let field = ''
  for (const limit of result.limits) {
    if (field) field += ', '
    field += `"${limit.name}";r=${limit.remaining};t=${Math.ceil(limit.resetMs / 1000)}`
  }
  return field
}

/**
 * `Retry-After` in delay-seconds (RFC 9110 §10.2.3), never 0 for a rejection. Draft-11 §6: it
 * "SHOULD NOT reference a point in time earlier than the end of the effective window", which holds
 * since the retry time is the latest reset among the violated limits (or the block's end).
 */
export function retryAfterSeconds(result: RateLimitResult): number {
  return Math.max(1, Math.ceil(result.retryAfterMs / 1000))
}

/**
 * The legacy `X-RateLimit-*` trio for the most constrained limit (fewest points left):
 * limit, remaining, and reset as Unix epoch seconds (the GitHub / express-rate-limit convention).
 */
export function legacyHeaders(result: RateLimitResult, nowMs = Date.now()): Record<string, string> | null {
  let tightest = result.limits[0]
  if (!tightest) return null
  for (const limit of result.limits) if (limit.remaining < tightest.remaining) tightest = limit
  return {
    'X-RateLimit-Limit': String(tightest.limit),
    'X-RateLimit-Remaining': String(tightest.remaining),
    'X-RateLimit-Reset': String(Math.ceil((nowMs + tightest.resetMs) / 1000)),
  }
}
