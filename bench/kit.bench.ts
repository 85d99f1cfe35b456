/**
 * 2 KB GETs: raw ioredis (defaults), raw ioredis with auto-pipelining (what the kit configures),
 * and the kit's module path `kit.hub.exec(redis => redis.get(key))` (breaker + error mapping).
 * In-process: CONNECTIONS concurrent loops for DURATION seconds, this process on core 0 and Redis on
 * core 1; CPU µs per GET of this process.
 */
import { Redis } from 'ioredis'
import { createRedkit } from '../src/index.js'
import { KEY as HTTP_KEY } from './kit.cases.js'
import { CONNECTIONS, DURATION_S, pin, WARMUP_S } from './lib/env.js'
import { measureHttp } from './lib/http.js'
import { benchRedis } from './lib/redis.js'
import { type Measurement, printTable, twoPasses } from './lib/table.js'

interface GetCase {
  name: string
  open(url: string): { get: (key: string) => Promise<unknown>; close: () => Promise<void> }
}

const cases: GetCase[] = [
  {
    name: 'ioredis',
    open: (url) => {
      const r = new Redis(url)
      return { get: (k) => r.get(k), close: async () => void (await r.quit()) }
    },
  },
  {
    name: 'ioredis autopipeline',
    open: (url) => {
      const r = new Redis(url, { enableAutoPipelining: true })
      return { get: (k) => r.get(k), close: async () => void (await r.quit()) }
    },
  },
  {
    name: 'ioredis autopipeline+timeout',
    open: (url) => {
      const r = new Redis(url, { enableAutoPipelining: true, commandTimeout: 1000 })
      return { get: (k) => r.get(k), close: async () => void (await r.quit()) }
    },
  },
  {
    name: 'kit.redis',
    open: (url) => {
      const kit = createRedkit({ redis: url, prefix: 'bench', configFile: false, env: {} })
      return { get: (k) => kit.redis.get(k), close: () => kit.close() }
    },
  },
  {
    name: 'kit.hub.exec',
    open: (url) => {
      const kit = createRedkit({ redis: url, prefix: 'bench', configFile: false, env: {} })
      return { get: (k) => kit.hub.exec((r) => r.get(k)), close: () => kit.close() }
    },
  },
]

async function loop(
  get: (k: string) => Promise<unknown>,
  key: string,
  seconds: number,
): Promise<{ ops: number; bytes: number }> {
  const end = performance.now() + seconds * 1000
  let ops = 0
  let bytes = 0
  await Promise.all(
    Array.from({ length: CONNECTIONS }, async () => {
      while (performance.now() < end) {
        const v = (await get(key)) as string | null
        bytes += v?.length ?? 0
        ops++
      }
    }),
  )
  return { ops, bytes }
}

export default async function kitBench(): Promise<void> {
  const redis = await benchRedis()
  // The client under test is this process: give it core 0, Redis keeps core 1.
  pin(process.pid, 0)
  const seed = new Redis(redis.url)
  const key = 'bench:kit:2kb'
  await seed.set(key, 'x'.repeat(2048))
  try {
    const rows = await twoPasses(cases, async (c, pass): Promise<Measurement> => {
      const client = c.open(redis.url)
      await loop(client.get, key, Math.min(WARMUP_S, 2))
      const cpu0 = process.cpuUsage()
      const t0 = performance.now()
      const { ops, bytes } = await loop(client.get, key, DURATION_S)
      const seconds = (performance.now() - t0) / 1000
      const cpu = process.cpuUsage(cpu0)
      await client.close()
      return {
        name: c.name,
        pass,
        opsPerSec: ops / seconds,
        cpuUsPerOp: (cpu.user + cpu.system) / ops,
        check: `${ops} GETs, ${bytes / ops} bytes each`,
      }
    })
    printTable('kit: 2 KB GET, in-process, concurrent loops', rows, 'ioredis autopipeline+timeout')
    pin(process.pid, 1)

    await seed.set(HTTP_KEY, 'y'.repeat(2048))
    const http = (name: string) => ({
      name,
      module: 'bench/kit.cases.ts',
      path: '/',
      context: { url: redis.url },
    })
    const httpRows = await twoPasses(
      [
        http('express + ioredis GET'),
        http('express + ioredis GET (autopipeline)'),
        http('express + kit.hub.exec GET'),
        http('express + kit.hub.exec GET (autoPipelining: false)'),
      ],
      measureHttp,
    )
    printTable('kit over HTTP: Express route answering one 2 KB GET', httpRows, 'express + ioredis GET')
  } finally {
    await seed.quit()
    await redis.stop()
  }
}
