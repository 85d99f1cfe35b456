/**
 * Analytics: (1) recording throughput in process, the batching writer (`kit.analytics.count()`,
 * `pageView()`) against one awaited INCR per event on the same auto-pipelined client; every
 * recording is verified in Redis after the run. (2) The `analytics()` middleware's cost on a
 * hello-world route over HTTP (server pinned to its own core), sequentially as every HTTP bench,
 * then side by side in several rounds: a cost of a few per cent is below the drift of sequential
 * runs, not below the spread of the side-by-side rounds.
 */
import { setImmediate as yieldToLoop } from 'node:timers/promises'
import { createRedkit, type Redkit } from '../src/index.js'
import { CONNECTIONS, DURATION_S, ROUNDS, WARMUP_S } from './lib/env.js'
import { measureHttp, measureHttpSideBySide } from './lib/http.js'
import { benchRedis } from './lib/redis.js'
import { type Measurement, printMedianRatios, printTable, twoPasses } from './lib/table.js'

interface RecordCase {
  name: string
  /** Records one event; returns a promise only when the call waits for Redis. */
  record(kit: Redkit, i: number): Promise<unknown> | undefined
  /** How many events Redis holds for this kit after the run. */
  counted(kit: Redkit): Promise<number>
}

const KEY = 'bench:analytics:incr'

const recordCases: RecordCase[] = [
  {
    name: 'INCR per event',
    record: (kit) => kit.hub.exec((redis) => redis.incr(KEY)),
    counted: async (kit) => Number(await kit.redis.get(KEY)),
  },
  {
    // What pageView() stores, written per event: counter, page ranking and visitor, pipelined.
    name: 'INCR+ZINCRBY+PFADD per event',
    record: (kit, i) =>
      kit.hub.exec((redis) =>
        Promise.all([
          redis.incr(KEY),
          redis.zincrby(`${KEY}:pages`, 1, `/page/${i % 50}`),
          redis.pfadd(`${KEY}:visitors`, `v${i % 5000}`),
        ]),
      ),
    counted: async (kit) => Number(await kit.redis.get(KEY)),
  },
  {
    name: 'analytics.count() batched',
    record: (kit) => void kit.analytics.count('bench'),
    counted: async (kit) => (await kit.analytics.stats()).totals.bench ?? 0,
  },
  {
    name: 'analytics.pageView() batched',
    record: (kit, i) => void kit.analytics.pageView(`/page/${i % 50}`, { visitorId: `v${i % 5000}` }),
    counted: async (kit) => (await kit.analytics.stats()).totals.pageviews ?? 0,
  },
]

/** Concurrent loops for `seconds`; synchronous recorders yield to the event loop every 64 calls. */
async function loop(c: RecordCase, kit: Redkit, seconds: number): Promise<number> {
  const end = performance.now() + seconds * 1000
  let ops = 0
  await Promise.all(
    Array.from({ length: CONNECTIONS }, async () => {
      while (performance.now() < end) {
        const pending = c.record(kit, ops)
        ops++
        if (pending) await pending
        else if (ops % 64 === 0) await yieldToLoop()
      }
    }),
  )
  return ops
}

async function measureRecording(url: string, c: RecordCase, pass: number): Promise<Measurement> {
  const kit = createRedkit({
    redis: url,
    prefix: `bench-an-${pass}-${Date.now()}`,
    configFile: false,
    env: {},
  })
  await kit.redis.del(KEY, `${KEY}:pages`, `${KEY}:visitors`)
  const warm = await loop(c, kit, Math.min(WARMUP_S, 2))
  await kit.analytics.flush()
  const cpu0 = process.cpuUsage()
  const t0 = performance.now()
  const ops = await loop(c, kit, DURATION_S)
  // The last batch's write belongs to the measured work.
  await kit.analytics.flush()
  const seconds = (performance.now() - t0) / 1000
  const cpu = process.cpuUsage(cpu0)
  const counted = await c.counted(kit)
  const flushes = kit.analytics.writer.flushes
  await kit.close()
  return {
    name: c.name,
    pass,
    opsPerSec: ops / seconds,
    cpuUsPerOp: (cpu.user + cpu.system) / ops,
    check: `${warm + ops} recorded, ${counted} in Redis${c.name.includes('batched') ? `, ${flushes} flushes` : ''}`,
  }
}

export default async function analyticsBench(): Promise<void> {
  const redis = await benchRedis()
  try {
    const recording = await twoPasses(recordCases, (c, pass) => measureRecording(redis.url, c, pass))
    printTable('analytics: recording events, in-process concurrent loops', recording, 'INCR per event')

    let run = 0
    const http = (name: string) => ({
      name,
      module: 'bench/analytics.cases.ts',
      path: '/hello',
      headers: { 'user-agent': 'autocannon' },
      get context() {
        return { url: redis.url, prefix: `bench-an-http-${++run}` }
      },
    })
    const rows = await twoPasses(
      [http('express'), http('express + analytics()'), http('express + analytics() + metrics()')],
      measureHttp,
    )
    printTable('analytics: middleware cost on a hello-world route', rows, 'express')

    const paired = await measureHttpSideBySide(
      [
        http('express'),
        http('express + listener only'),
        http('express + reads only'),
        http('express + analytics()'),
      ],
      ROUNDS,
    )
    printTable('analytics: middleware cost, side by side (pass = round)', paired, 'express')
    printMedianRatios('analytics: middleware cost, side by side, over the rounds', paired, 'express')
  } finally {
    await redis.stop()
  }
}
