/**
 * Uncontended `using()`: acquire, run an empty routine, release. The anchor is the Redlock
 * library's own `using()` (@sesamecare-oss/redlock, one server), on a plain ioredis client and on
 * one with auto-pipelining (what the kit configures). In-process: CONNECTIONS concurrent loops for
 * DURATION seconds, each loop on its own resource; CPU µs per locked section of this process.
 */
import { Redlock } from '@sesamecare-oss/redlock'
import { Redis } from 'ioredis'
import { createRedkit } from '../src/index.js'
import { CONNECTIONS, DURATION_S, WARMUP_S } from './lib/env.js'
import { benchRedis } from './lib/redis.js'
import { type Measurement, printTable, twoPasses } from './lib/table.js'

interface LockCase {
  name: string
  open(url: string): {
    section: (resource: string) => Promise<unknown>
    /** Lock keys left in Redis after the run (must be 0: every lease was released). */
    leftover: () => Promise<number>
    close: () => Promise<void>
  }
}

const TTL = 5000

function redlockCase(name: string, autopipeline: boolean): LockCase {
  return {
    name,
    open: (url) => {
      const client = new Redis(url, { enableAutoPipelining: autopipeline })
      const redlock = new Redlock([client], { retryCount: 0 })
      return {
        section: (resource) => redlock.using([`bench:redlock:${resource}`], TTL, async () => undefined),
        leftover: async () => (await client.keys('bench:redlock:*')).length,
        close: async () => void (await client.quit()),
      }
    },
  }
}

const cases: LockCase[] = [
  redlockCase('redlock using', false),
  redlockCase('redlock using autopipeline', true),
  {
    name: 'kit.locks.using',
    open: (url) => {
      const kit = createRedkit({ redis: url, prefix: 'bench', configFile: false, env: {} })
      return {
        section: (resource) => kit.locks.using(resource, async () => undefined, { ttl: TTL, retry: false }),
        leftover: async () =>
          (await kit.redis.keys('bench:lock:*')).filter((k) => !k.endsWith(':fence')).length,
        close: () => kit.close(),
      }
    },
  },
]

async function loop(section: (r: string) => Promise<unknown>, seconds: number): Promise<number> {
  const end = performance.now() + seconds * 1000
  let ops = 0
  await Promise.all(
    Array.from({ length: CONNECTIONS }, async (_, i) => {
      const resource = `r${i}`
      while (performance.now() < end) {
        await section(resource)
        ops++
      }
    }),
  )
  return ops
}

export default async function lockBench(): Promise<void> {
  const redis = await benchRedis()
  try {
    const rows = await twoPasses(cases, async (c, pass): Promise<Measurement> => {
      const client = c.open(redis.url)
      await loop(client.section, Math.min(WARMUP_S, 2))
      const cpu0 = process.cpuUsage()
      const t0 = performance.now()
      const ops = await loop(client.section, DURATION_S)
      const seconds = (performance.now() - t0) / 1000
      const cpu = process.cpuUsage(cpu0)
      const leftover = await client.leftover()
      await client.close()
      return {
        name: c.name,
        pass,
        opsPerSec: ops / seconds,
        cpuUsPerOp: (cpu.user + cpu.system) / ops,
        check: `${ops} locked sections, ${leftover} lock keys left`,
      }
    })
    printTable('lock: uncontended using(), in-process, concurrent loops', rows, 'redlock using')
  } finally {
    await redis.stop()
  }
}
