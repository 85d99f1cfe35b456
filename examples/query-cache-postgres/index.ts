/**
 * Query cache on a real PostgreSQL: a slow report is computed once, served from the cache
 * afterwards (also to 50 concurrent callers on a cold key), and invalidated by a write that
 * declares the tag it changes. Prints the latency of each step.
 *
 *   npm run example:query-cache
 *
 * PostgreSQL from the standard PG* variables (default 127.0.0.1:5432, database `test`);
 * Redis from REDIS_URL (default: 127.0.0.1:6379 if it answers, else a throwaway redis-server).
 */
import pg from 'pg'
import { cachedPool, createRedkit } from 'redkit'
import { demoRedisUrl } from '../demo/redis.js'

const TABLE = 'redkit_example_orders'
const ROWS = Number(process.env.ROWS ?? 300_000)

const pool = new pg.Pool({
  host: process.env.PGHOST ?? '127.0.0.1',
  port: Number(process.env.PGPORT ?? 5432),
  database: process.env.PGDATABASE ?? 'test',
  user: process.env.PGUSER ?? process.env.USER ?? 'postgres',
  password: process.env.PGPASSWORD,
})
const { url, source } = await demoRedisUrl()
const kit = createRedkit({ redis: url, prefix: 'example-query-cache' })
kit.queries.configure({ ttl: '5m', grace: '1m', negativeTtl: '10s' })
// Counts the statements that really reach PostgreSQL.
let executions = 0
const db = cachedPool(kit, {
  query: (text: string, values?: unknown[]) => {
    executions++
    return pool.query(text, values)
  },
})

const ms = (started: number) => `${(performance.now() - started).toFixed(2)} ms`
const perCall = (started: number, calls: number) => `${((performance.now() - started) / calls).toFixed(3)} ms`

async function setup(): Promise<void> {
  await pool.query(`CREATE TABLE IF NOT EXISTS ${TABLE} (
    id bigserial PRIMARY KEY, customer text NOT NULL, total numeric(12,2) NOT NULL, placed_at timestamptz NOT NULL)`)
  const { rows } = await pool.query<{ n: string }>(`SELECT count(*) AS n FROM ${TABLE}`)
  if (Number(rows[0]?.n) < ROWS) {
    console.log(`Creating ${ROWS} orders in ${TABLE} (first run only)...`)
    await pool.query(`TRUNCATE ${TABLE}`)
    await pool.query(
      `INSERT INTO ${TABLE} (customer, total, placed_at)
       SELECT 'customer-' || (g % 500), round((random() * 200)::numeric, 2), now() - (g || ' minutes')::interval
       FROM generate_series(1, $1) AS g`,
      [ROWS],
    )
    await pool.query(`ANALYZE ${TABLE}`)
  }
}

// The "expensive" report: revenue per customer over the whole table.
const REPORT = `
  SELECT customer, count(*)::int AS orders, sum(total)::text AS revenue, max(placed_at) AS last_order
  FROM ${TABLE} GROUP BY customer ORDER BY sum(total) DESC LIMIT 5`

async function report(): Promise<
  Array<{ customer: string; orders: number; revenue: string; last_order: Date }>
> {
  const result = await db.query<{ customer: string; orders: number; revenue: string; last_order: Date }>(
    REPORT,
    [],
    { tags: ['orders'] },
  )
  return result.rows
}

try {
  await setup()
  await kit.queries.invalidateTags(['orders']) // start cold
  console.log(
    `PostgreSQL ${pool.options.host}:${pool.options.port}/${pool.options.database}, Redis ${url} (${source})\n`,
  )

  let started = performance.now()
  const first = await report()
  console.log(`1. miss  (runs the query)            ${ms(started)}`)
  console.log(
    `   top customer: ${first[0]?.customer}, ${first[0]?.orders} orders, revenue ${first[0]?.revenue}`,
  )
  console.log(`   last_order is a ${first[0]?.last_order.constructor.name} (types survive the cache)`)

  await report()
  started = performance.now()
  for (let i = 0; i < 100; i++) await report()
  console.log(`2. hit   (memory tier)               ${perCall(started, 100)} per call`)

  const fromRedis = kit.queries.engine.namespace('query', { l1: false })
  const key = kit.queries.keyFor(REPORT, [])
  await fromRedis.get(key)
  started = performance.now()
  for (let i = 0; i < 100; i++) await fromRedis.get(key)
  console.log(`3. hit   (Redis, memory tier off)    ${perCall(started, 100)} per call`)

  await kit.queries.invalidateTags(['orders'])
  const before = executions
  started = performance.now()
  await Promise.all(Array.from({ length: 50 }, () => report()))
  console.log(
    `4. 50 concurrent calls on a cold key ${ms(started)}, query executed ${executions - before} time(s)`,
  )

  const top = first[0]?.customer ?? 'customer-1'
  started = performance.now()
  await db.query(
    `INSERT INTO ${TABLE} (customer, total, placed_at) VALUES ($1, $2, now())`,
    [top, '100000.00'],
    { invalidates: ['orders'] },
  )
  console.log(`5. write with { invalidates: ['orders'] } ${ms(started)}`)

  started = performance.now()
  const after = await report()
  console.log(`6. miss after the write              ${ms(started)}`)
  console.log(
    `   ${top}: revenue ${first.find((r) => r.customer === top)?.revenue} -> ${after.find((r) => r.customer === top)?.revenue}`,
  )

  await pool.query(`DELETE FROM ${TABLE} WHERE total = 100000.00`)
  await kit.queries.invalidateTags(['orders'])
} finally {
  await kit.close()
  await pool.end()
}
