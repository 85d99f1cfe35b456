import type pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { cachedPool, createRedkit, type Redkit } from '../../src/index.js'
import { type StandaloneRedis, startRedis, uniquePrefix } from '../helpers/index.js'
import { connectPostgres } from './postgres.js'

let redis: StandaloneRedis
let kit: Redkit
let pool: pg.Pool

beforeAll(async () => {
  pool = await connectPostgres()
  redis = await startRedis()
  kit = createRedkit({ redis: redis.url, prefix: uniquePrefix('queries-down'), configFile: false, env: {} })
  kit.queries.configure({ l1: false })
  await kit.queries.getOrExecute('SELECT warm', [], async () => 'cached')
  await redis.server.kill()
})

afterAll(async () => {
  await kit?.close()
  await redis?.stop()
  await pool?.end()
})

describe('query cache with Redis killed', () => {
  it('runs the query directly (fail open) within the command timeout and emits cache:bypass', async () => {
    const bypass: Array<{ cache: string; reason: string }> = []
    kit.on('cache:bypass', (e) => bypass.push(e))
    let executions = 0
    for (let i = 0; i < 3; i++) {
      const started = Date.now()
      const result = await kit.queries.getOrExecute('SELECT warm', [], async () => {
        executions++
        return 'fresh from the database'
      })
      expect(result).toBe('fresh from the database')
      expect(Date.now() - started).toBeLessThan(3000)
    }
    expect(executions).toBe(3)
    expect(bypass).toContainEqual({ cache: 'query', reason: 'redis-unavailable' })
  })

  it('the pg adapter keeps answering reads and writes from PostgreSQL', async () => {
    const db = cachedPool(kit, pool)
    const errors: string[] = []
    kit.on('cache:error', (e) => errors.push(e.key))
    const started = Date.now()
    const read = await db.query<{ n: number }>('SELECT 41 + $1::int AS n', [1], { ttl: '1m', tags: ['t'] })
    expect(read.rows[0]?.n).toBe(42)
    const write = await db.query('SELECT 1 AS written', [], { invalidates: ['t'] })
    expect(write.rows).toEqual([{ written: 1 }])
    expect(errors).toContain('invalidate:t')
    expect(Date.now() - started).toBeLessThan(6000)
  })
})
