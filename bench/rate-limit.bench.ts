/**
 * Rate limiter over HTTP: redkit's `rateLimit` middleware (one and two limits) against a minimal
 * middleware calling rate-limiter-flexible's `RateLimiterRedis.consume()` directly and against
 * express-rate-limit + rate-limit-redis, with baselines (a) plain Express and (b) Express + one
 * ioredis GET. Allowed path with a points limit no run can reach; then the rejected path
 * (labelled), including redkit's in-memory block. Last, the consume call alone, in process (no
 * HTTP, so less noise): rate-limiter-flexible's `consume()` against redkit's.
 */
import { Redis } from 'ioredis'
import { RateLimiterRedis } from 'rate-limiter-flexible'
import { createRedkit } from '../src/index.js'
import { CONNECTIONS, DURATION_S, WARMUP_S } from './lib/env.js'
import { measureHttp } from './lib/http.js'
import { benchRedis } from './lib/redis.js'
import { type Measurement, printTable, twoPasses } from './lib/table.js'

const MODULE = 'bench/rate-limit.cases.ts'
const HIGH = 1_000_000_000

interface ConsumeCase {
  name: string
  open(url: string): { consume: () => Promise<unknown>; close: () => Promise<void> }
}

const consumeCases: ConsumeCase[] = [
  {
    name: 'rlflx RateLimiterRedis.consume()',
    open: (url) => {
      const redis = new Redis(url, { enableAutoPipelining: true, commandTimeout: 1000 })
      const limiter = new RateLimiterRedis({
        storeClient: redis,
        keyPrefix: 'bench-rlflx',
        points: HIGH,
        duration: 60,
      })
      return { consume: () => limiter.consume('127.0.0.1'), close: async () => void (await redis.quit()) }
    },
  },
  {
    name: 'redkit policy.consume(), 1 limit',
    open: (url) => {
      const kit = createRedkit({ redis: url, prefix: 'bench-rl1', configFile: false, env: {} })
      const policy = kit.rateLimits.policy({ limits: [{ points: HIGH, duration: '1m' }] })
      return { consume: () => policy.consume('127.0.0.1'), close: () => kit.close() }
    },
  },
  {
    name: 'redkit policy.consume(), 2 limits',
    open: (url) => {
      const kit = createRedkit({ redis: url, prefix: 'bench-rl2', configFile: false, env: {} })
      const policy = kit.rateLimits.policy({
        limits: [
          { points: HIGH, duration: '1s' },
          { points: HIGH, duration: '1d' },
        ],
      })
      return { consume: () => policy.consume('127.0.0.1'), close: () => kit.close() }
    },
  },
]

async function loop(consume: () => Promise<unknown>, seconds: number): Promise<number> {
  const end = performance.now() + seconds * 1000
  let ops = 0
  await Promise.all(
    Array.from({ length: CONNECTIONS }, async () => {
      while (performance.now() < end) {
        await consume()
        ops++
      }
    }),
  )
  return ops
}

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
        http('redkit rateLimit, 1 limit, no headers'),
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
    const inProcess = await twoPasses(consumeCases, async (c, pass): Promise<Measurement> => {
      const client = c.open(redis.url)
      await loop(client.consume, Math.min(WARMUP_S, 2))
      const cpu0 = process.cpuUsage()
      const t0 = performance.now()
      const ops = await loop(client.consume, Math.min(DURATION_S, 5))
      const seconds = (performance.now() - t0) / 1000
      const cpu = process.cpuUsage(cpu0)
      await client.close()
      return { name: c.name, pass, opsPerSec: ops / seconds, cpuUsPerOp: (cpu.user + cpu.system) / ops }
    })
    printTable('consume() alone, in process (no HTTP)', inProcess, 'rlflx RateLimiterRedis.consume()')
  } finally {
    await redis.stop()
  }
}
