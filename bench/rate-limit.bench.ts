/**
 * Rate limiter over HTTP: redkit's `rateLimit` middleware (one and two limits) against a minimal
 * middleware calling rate-limiter-flexible's `RateLimiterRedis.consume()` directly and against
 * express-rate-limit + rate-limit-redis, with baselines (a) plain Express and (b) Express + one
 * ioredis GET. Allowed path with a points limit no run can reach; then the rejected path
 * (labelled), including redkit's in-memory block.
 */
import { measureHttp } from './lib/http.js'
import { benchRedis } from './lib/redis.js'
import { printTable, twoPasses } from './lib/table.js'

const MODULE = 'bench/rate-limit.cases.ts'

export default async function rateLimitBench(): Promise<void> {
  const redis = await benchRedis()
  try {
    let run = 0
    const http = (name: string) => ({
      name,
      module: MODULE,
      path: '/',
      get context() {
        // A fresh key space per measurement, so no run inherits another's counters.
        return { url: redis.url, prefix: `bench-rl-${++run}` }
      },
    })
    const allowed = twoPasses(
      [
        http('express'),
        http('express + ioredis GET'),
        http('rlflx consume()'),
        http('redkit rateLimit, 1 limit'),
        http('redkit rateLimit, 2 limits'),
        http('express-rate-limit + rate-limit-redis'),
      ],
      measureHttp,
    )
    printTable('rate limit, allowed path (every request passes)', await allowed, 'rlflx consume()')
    const rejected = await twoPasses(
      [
        http('express'),
        http('rlflx consume(), rejected'),
        http('redkit rateLimit, rejected'),
        http('redkit rateLimit, blocked (from memory)'),
      ],
      measureHttp,
    )
    printTable(
      'rate limit, rejected path (429 after the first request)',
      rejected,
      'rlflx consume(), rejected',
    )
  } finally {
    await redis.stop()
  }
}
