import type pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type CachedPool, cachedPool, createRedkit, looksLikeRead, type Redkit } from '../../src/index.js'
import { type StandaloneRedis, startRedis, uniquePrefix } from '../helpers/index.js'
import { connectPostgres } from './postgres.js'

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
let redis: StandaloneRedis
let pool: pg.Pool
let kitA: Redkit
let kitB: Redkit
let dbA: CachedPool<pg.Pool>
let dbB: CachedPool<pg.Pool>
const prefix = uniquePrefix('pg')
const table = `orders_${prefix.replace(/\W/g, '_')}`

interface Order {
  id: number
  customer: string
  total: string
  big: string
  placed_at: Date
  receipt: Buffer | null
  meta: { items: Array<{ sku: string; qty: number }> } | null
}

beforeAll(async () => {
  pool = await connectPostgres()
  redis = await startRedis()
  kitA = createRedkit({ redis: redis.url, prefix, configFile: false, env: {} })
  kitB = createRedkit({ redis: redis.url, prefix, configFile: false, env: {} })
  dbA = cachedPool(kitA, pool)
  dbB = cachedPool(kitB, pool)
  kitA.queries
  kitB.queries
  await pool.query(`CREATE TABLE ${table} (
    id serial PRIMARY KEY, customer text NOT NULL, total numeric(12,2) NOT NULL, big bigint NOT NULL,
    placed_at timestamptz NOT NULL, receipt bytea, meta jsonb)`)
  await pool.query(
    `INSERT INTO ${table} (customer, total, big, placed_at, receipt, meta) VALUES
      ('ann', 10.50, 9007199254740993, '2024-03-01T10:00:00Z', '\\x00ff10', '{"items":[{"sku":"a","qty":2}]}'),
      ('bob', 99.99, 1, '2024-03-02T11:30:00.250Z', NULL, NULL)`,
  )
  await sleep(200)
})

afterAll(async () => {
  await pool?.query(`DROP TABLE IF EXISTS ${table}`).catch(() => undefined)
  await pool?.end()
  await kitA?.close()
  await kitB?.close()
  await redis?.stop()
})

describe('pg adapter against PostgreSQL', () => {
  it('caches reads and returns PostgreSQL types intact (timestamptz, bytea, jsonb, null, int8, numeric)', async () => {
    const sql = `SELECT * FROM ${table} ORDER BY id`
    const first = await dbA.query<Order>(sql, [], { ttl: '1m', tags: ['orders'] })
    const second = await dbB.query<Order>(sql, [], { ttl: '1m', tags: ['orders'] })
    expect(second).toEqual(first)
    const [ann, bob] = second.rows
    expect(ann?.placed_at).toBeInstanceOf(Date)
    expect(ann?.placed_at.toISOString()).toBe('2024-03-01T10:00:00.000Z')
    expect(Buffer.isBuffer(ann?.receipt)).toBe(true)
    expect(ann?.receipt).toEqual(Buffer.from([0, 255, 16]))
    expect(ann?.meta).toEqual({ items: [{ sku: 'a', qty: 2 }] })
    expect(ann?.big).toBe('9007199254740993')
    expect(ann?.total).toBe('10.50')
    expect(bob?.receipt).toBeNull()
    expect(bob?.placed_at.getUTCMilliseconds()).toBe(250)
    expect(second.rowCount).toBe(2)
    expect(second.command).toBe('SELECT')
    expect(second.fields.map((f) => f.name)).toContain('placed_at')
  })

  it('answers a hit without querying PostgreSQL', async () => {
    const sql = `SELECT count(*)::int AS n FROM ${table} WHERE customer = $1`
    let queries = 0
    const counting = cachedPool(kitA, {
      query: (text: string, values?: unknown[]) => {
        queries++
        return pool.query(text, values)
      },
    })
    expect((await counting.query<{ n: number }>(sql, ['ann'])).rows[0]?.n).toBe(1)
    expect((await counting.query<{ n: number }>(sql, ['ann'])).rows[0]?.n).toBe(1)
    expect((await counting.query<{ n: number }>(sql, ['bob'])).rows[0]?.n).toBe(1)
    expect(queries).toBe(2)
  })

  it('a write declaring { invalidates } makes the next read see the new row on every instance', async () => {
    const sql = `SELECT count(*)::int AS n, sum(total)::text AS total FROM ${table}`
    const before = await dbA.query<{ n: number; total: string }>(sql, [], { ttl: '1m', tags: ['orders'] })
    expect((await dbB.query<{ n: number }>(sql, [], { ttl: '1m', tags: ['orders'] })).rows[0]?.n).toBe(
      before.rows[0]?.n,
    )
    const insert = await dbA.query(
      `INSERT INTO ${table} (customer, total, big, placed_at) VALUES ($1, $2, $3, $4) RETURNING id`,
      ['cid', '5.00', '2', new Date()],
      { invalidates: ['orders'] },
    )
    expect(insert.command).toBe('INSERT')
    expect(insert.rowCount).toBe(1)
    const expected = (before.rows[0]?.n ?? 0) + 1
    // The writing instance sees its write at once; the other as soon as the bus message lands.
    expect((await dbA.query<{ n: number }>(sql, [], { ttl: '1m', tags: ['orders'] })).rows[0]?.n).toBe(
      expected,
    )
    const deadline = Date.now() + 3000
    let seen: number | undefined
    while (Date.now() < deadline) {
      seen = (await dbB.query<{ n: number }>(sql, [], { ttl: '1m', tags: ['orders'] })).rows[0]?.n
      if (seen === expected) break
      await sleep(10)
    }
    expect(seen).toBe(expected)
  })

  it('runs a cold query once for 100 concurrent calls across two instances', async () => {
    let queries = 0
    const counting = (kit: Redkit) =>
      cachedPool(kit, {
        query: (text: string, values?: unknown[]) => {
          queries++
          return pool.query(text, values)
        },
      })
    const a = counting(kitA)
    const b = counting(kitB)
    const sql = `SELECT pg_sleep(0.2), count(*)::int AS n FROM ${table}`
    const results = await Promise.all(
      Array.from({ length: 100 }, (_, i) => (i % 2 ? a : b).query<{ n: number }>(sql)),
    )
    expect(queries).toBe(1)
    expect(new Set(results.map((r) => r.rows[0]?.n)).size).toBe(1)
  })

  it('never caches writes, locking reads or { cache: false }', async () => {
    expect(looksLikeRead('SELECT 1')).toBe(true)
    expect(looksLikeRead('  (SELECT 1) UNION (SELECT 2)')).toBe(true)
    expect(looksLikeRead('WITH x AS (SELECT 1) SELECT * FROM x')).toBe(true)
    expect(looksLikeRead("SELECT 'update' AS word")).toBe(true)
    expect(looksLikeRead('WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d')).toBe(false)
    expect(looksLikeRead('SELECT * FROM t FOR UPDATE')).toBe(false)
    expect(looksLikeRead('SELECT * INTO copy FROM t')).toBe(false)
    expect(looksLikeRead('UPDATE t SET a = 1')).toBe(false)
    const first = await dbA.query<{ n: number }>(
      'SELECT nextval($1::regclass)::int AS n',
      [`${table}_id_seq`],
      { cache: false },
    )
    const second = await dbA.query<{ n: number }>(
      'SELECT nextval($1::regclass)::int AS n',
      [`${table}_id_seq`],
      { cache: false },
    )
    expect(second.rows[0]?.n).toBe((first.rows[0]?.n ?? 0) + 1)
  })

  it('gives each query its own result where comments, escapes or continuations change its meaning', async () => {
    const run = (sql: string) =>
      kitA.queries.getOrExecute(sql, [], async () => (await pool.query(sql)).rows, { ttl: '1m' })
    const filtered = `SELECT id FROM ${table} -- list\nWHERE id = 1`
    const commented = `SELECT id FROM ${table} -- list WHERE id = 1`
    const all = (await pool.query(`SELECT id FROM ${table}`)).rowCount
    expect(all).toBeGreaterThan(1)
    expect(await run(filtered)).toHaveLength(1)
    expect(await run(commented)).toHaveLength(all ?? 0)
    expect(await run("SELECT 'x\\' AS p, 'a  b' AS q")).toEqual([{ p: 'x\\', q: 'a  b' }])
    expect(await run("SELECT 'x\\' AS p, 'a b' AS q")).toEqual([{ p: 'x\\', q: 'a b' }])
    expect(await run("SELECT /* it's */ 'a  b' AS q")).toEqual([{ q: 'a  b' }])
    expect(await run("SELECT /* it's */ 'a b' AS q")).toEqual([{ q: 'a b' }])
    expect(await run("SELECT 'a'\n'b' AS q")).toEqual([{ q: 'ab' }])
    await expect(run("SELECT 'a' 'b' AS q")).rejects.toThrow(/syntax error/)
  })

  it('passes PostgreSQL errors through and caches nothing for them', async () => {
    await expect(dbA.query(`SELECT no_such_column FROM ${table}`)).rejects.toThrow(/no_such_column/)
    await expect(dbA.query(`SELECT no_such_column FROM ${table}`)).rejects.toThrow(/no_such_column/)
  })
})
