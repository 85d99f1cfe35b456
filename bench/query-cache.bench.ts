/**
 * Query-cache hits, in-process, CONNECTIONS concurrent loops: `kit.queries.getOrExecute` served
 * from Redis (memory tier off) and from the memory tier, versus the hand-written baseline (one
 * ioredis GET of the JSON text plus JSON.parse, client configured like the kit's) and
 * cache-manager 7's `wrap` on Redis (@keyv/redis). Same payload everywhere: 20 result rows,
 * about 2 KB as JSON. bentocache is not measured: it declares a peer dependency on ioredis 5,
 * which conflicts with this package's ioredis 6 under npm's strict peer resolution.
 */
import KeyvRedis, { Keyv } from '@keyv/redis'
import { createCache } from 'cache-manager'
import { Redis } from 'ioredis'
import { createRedkit } from '../src/index.js'
import { CONNECTIONS, DURATION_S, pin, WARMUP_S } from './lib/env.js'
import { benchRedis } from './lib/redis.js'
import { type Measurement, printTable, twoPasses } from './lib/table.js'

const SQL = 'SELECT id, customer, total, status, placed_at FROM orders WHERE status = $1 ORDER BY id LIMIT 20'
const ROWS = Array.from({ length: 20 }, (_, i) => ({
  id: 1000 + i,
  customer: `customer-${i * 7}`,
  total: Math.round(i * 1234.5) / 100,
  status: 'open',
  placed_at: `2024-03-${String((i % 28) + 1).padStart(2, '0')}T10:00:00.000Z`,
  lines: [
    { sku: `sku-${i}`, qty: i % 3, price: 9.99 },
    { sku: `sku-${i + 1}`, qty: 1, price: 19.5 },
  ],
}))
const JSON_TEXT = JSON.stringify(ROWS)

/** Number of distinct keys the loops read in the spread run. */
const SLOTS = 50

interface Case {
  name: string
  open(url: string): Promise<{
    get: (slot: number) => Promise<unknown>
    executions: () => number
    close: () => Promise<void>
  }>
}

const cases: Case[] = [
  {
    name: 'ioredis GET + JSON.parse',
    open: async (url) => {
      const redis = new Redis(url, { enableAutoPipelining: true, commandTimeout: 1000 })
      for (let slot = 0; slot < SLOTS; slot++) await redis.set(`bench:qc:raw:${slot}`, JSON_TEXT)
      return {
        get: async (slot) => JSON.parse((await redis.get(`bench:qc:raw:${slot}`)) as string),
        executions: () => 0,
        close: async () => void (await redis.quit()),
      }
    },
  },
  {
    name: 'queries hit (Redis, L1 off)',
    open: async (url) => {
      const kit = createRedkit({ redis: url, prefix: 'bench-qc-l2', configFile: false, env: {} })
      kit.queries.configure({ l1: false, ttl: '1h' })
      let executions = 0
      const execute = async () => {
        executions++
        return ROWS
      }
      for (let slot = 0; slot < SLOTS; slot++) {
        await kit.queries.getOrExecute(SQL, [`${slot}`], execute, { tags: ['orders'] })
      }
      return {
        get: (slot) => kit.queries.getOrExecute(SQL, [`${slot}`], execute, { tags: ['orders'] }),
        executions: () => executions,
        close: () => kit.close(),
      }
    },
  },
  {
    name: 'queries hit (memory tier)',
    open: async (url) => {
      const kit = createRedkit({ redis: url, prefix: 'bench-qc-l1', configFile: false, env: {} })
      kit.queries.configure({ ttl: '1h' })
      let executions = 0
      const execute = async () => {
        executions++
        return ROWS
      }
      for (let slot = 0; slot < SLOTS; slot++) {
        await kit.queries.getOrExecute(SQL, [`${slot}`], execute, { tags: ['orders'] })
      }
      return {
        get: (slot) => kit.queries.getOrExecute(SQL, [`${slot}`], execute, { tags: ['orders'] }),
        executions: () => executions,
        close: () => kit.close(),
      }
    },
  },
  {
    name: 'cache-manager wrap (@keyv/redis)',
    open: async (url) => {
      const store = new KeyvRedis(url)
      const cache = createCache({ stores: [new Keyv({ store, namespace: 'bench-qc-cm' })] })
      let executions = 0
      const execute = async () => {
        executions++
        return ROWS
      }
      const key = (slot: number) => `${SQL}:${JSON.stringify([`${slot}`])}`
      for (let slot = 0; slot < SLOTS; slot++) await cache.wrap(key(slot), execute, 3_600_000)
      return {
        get: (slot) => cache.wrap(key(slot), execute, 3_600_000),
        executions: () => executions,
        close: async () => {
          await cache.disconnect()
        },
      }
    },
  },
]

async function loop(
  get: (slot: number) => Promise<unknown>,
  seconds: number,
  spread: boolean,
): Promise<number> {
  const end = performance.now() + seconds * 1000
  let ops = 0
  await Promise.all(
    Array.from({ length: CONNECTIONS }, async (_, i) => {
      const slot = spread ? i % SLOTS : 0
      while (performance.now() < end) {
        const rows = (await get(slot)) as unknown[]
        if (rows.length !== 20) throw new Error('wrong payload')
        ops++
      }
    }),
  )
  return ops
}

export default async function queryCacheBench(): Promise<void> {
  const redis = await benchRedis()
  try {
    for (const spread of [false, true]) {
      const rows = await twoPasses(cases, async (c, pass): Promise<Measurement> => {
        const client = await c.open(redis.url)
        const seeded = client.executions()
        await loop(client.get, Math.min(WARMUP_S, 2), spread)
        const cpu0 = process.cpuUsage()
        const t0 = performance.now()
        const ops = await loop(client.get, DURATION_S, spread)
        const seconds = (performance.now() - t0) / 1000
        const cpu = process.cpuUsage(cpu0)
        const executions = client.executions() - seeded
        await client.close()
        return {
          name: c.name,
          pass,
          opsPerSec: ops / seconds,
          cpuUsPerOp: (cpu.user + cpu.system) / ops,
          check: `${ops} reads; the query ran ${executions} time(s) after seeding (0 = every read was a hit)`,
        }
      })
      printTable(
        `query cache hit, 20-row result (${JSON_TEXT.length} B as JSON), in-process, ${CONNECTIONS} concurrent loops, ` +
          (spread ? `${SLOTS} distinct keys (no read sharing)` : 'one hot key'),
        rows,
        'ioredis GET + JSON.parse',
      )
    }
  } finally {
    pin(process.pid, 1)
    await redis.stop()
  }
}
