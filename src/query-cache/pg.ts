import type { Redkit } from '../kit.js'
import type { QueryOptions } from './query-cache.js'

/** What the adapter needs from a `pg` Pool (or Client): `query(text, values)`. */
export interface PgQueryable {
  query(text: string, values?: unknown[]): Promise<PgResultLike>
}

/** The parts of a `pg` QueryResult the adapter reads. */
export interface PgResultLike {
  rows: unknown[]
  rowCount: number | null
  command: string
  fields?: ReadonlyArray<{ name: string; dataTypeID: number }>
}

/** A query result as the cached pool returns it (plain data, so it can be cached). */
export interface CachedQueryResult<R> {
  rows: R[]
  rowCount: number | null
  command: string
  fields: Array<{ name: string; dataTypeID: number }>
}

/** Per-call options of {@link CachedPool.query}. */
export interface CachedPoolQueryOptions extends QueryOptions {
  /**
   * `true` caches this statement even if it does not look like a read; `false` never caches it.
   * @default reads (SELECT, WITH without data-modifying parts, VALUES, TABLE, SHOW) are cached
   */
  cache?: boolean
  /** Tags to invalidate once this statement succeeded (for writes), e.g. `['orders']`. @default [] */
  invalidates?: readonly string[]
}

/** Options of {@link cachedPool}. */
export interface CachedPoolOptions {
  /** Defaults applied to every call (merged under the call's own options). @default {} */
  defaults?: QueryOptions
}

const READ = /^[\s(]*(select|with|values|table|show)\b/i
const MODIFYING = /\b(insert|update|delete|merge|truncate|alter|create|drop|grant|revoke|call|do)\b/i
const LOCKING = /\bfor\s+(update|no\s+key\s+update|share|key\s+share)\b/i

/** True when `sql` reads without side effects as far as its text tells (no locking clause, no data-modifying CTE). */
export function looksLikeRead(sql: string): boolean {
  if (!READ.test(sql)) return false
  const withoutLiterals = sql.replace(/'(?:[^']|'')*'/g, "''")
  if (LOCKING.test(withoutLiterals)) return false
  if (/^[\s(]*with\b/i.test(withoutLiterals) && MODIFYING.test(withoutLiterals)) return false
  // SELECT ... INTO creates a table.
  if (/^[\s(]*select\b/i.test(withoutLiterals) && /\binto\b/i.test(withoutLiterals)) return false
  return true
}

/**
 * A `pg` Pool whose reads go through `kit.queries` and whose writes invalidate tags.
 *
 * Reads with volatile results (`now()`, `random()`, `nextval()`) should pass `{ cache: false }`.
 * Transactions (`pool.connect()`) are not wrapped: run them on the pool and invalidate after
 * commit with `cachedPool.invalidateTags()`.
 */
export class CachedPool<P extends PgQueryable = PgQueryable> {
  /** The wrapped pool, for transactions and anything uncached. */
  readonly pool: P
  readonly #kit: Redkit
  readonly #defaults: QueryOptions

  constructor(kit: Redkit, pool: P, options: CachedPoolOptions = {}) {
    this.#kit = kit
    this.pool = pool
    this.#defaults = options.defaults ?? {}
  }

  /**
   * Runs `sql`: reads are answered from the cache when possible (one execution across all
   * instances on a miss); other statements run on the pool, then invalidate `invalidates`.
   *
   * @example
   * const { rows } = await db.query('SELECT * FROM orders WHERE status = $1', ['open'], { ttl: '30s', tags: ['orders'] })
   * await db.query('UPDATE orders SET status = $1 WHERE id = $2', ['paid', 7], { invalidates: ['orders'] })
   */
  async query<R = Record<string, unknown>>(
    sql: string,
    params: unknown[] = [],
    options: CachedPoolQueryOptions = {},
  ): Promise<CachedQueryResult<R>> {
    const { cache, invalidates, ...queryOptions } = options
    const cacheable = cache ?? (looksLikeRead(sql) && !invalidates?.length)
    const run = async (): Promise<CachedQueryResult<R>> => plain<R>(await this.pool.query(sql, params))
    if (!cacheable) {
      const result = await run()
      if (invalidates && invalidates.length > 0) await this.#invalidateAfterWrite(invalidates)
      return result
    }
    return this.#kit.queries.getOrExecute(sql, params, run, { ...this.#defaults, ...queryOptions })
  }

  /** Invalidates cached reads by tag (after a transaction commits, for example). */
  invalidateTags(tags: readonly string[]): Promise<void> {
    return this.#kit.queries.invalidateTags(tags)
  }

  async #invalidateAfterWrite(tags: readonly string[]): Promise<void> {
    try {
      await this.#kit.queries.invalidateTags(tags)
    } catch (error) {
      // The write is committed: failing the caller now would invite a retry that writes twice.
      // Cached reads of these tags stay until their TTL; the event makes that visible.
      this.#kit.events.emit('cache:error', {
        cache: this.#kit.queries.engine.name,
        key: `invalidate:${tags.join(',')}`,
        error: error as Error,
      })
    }
  }
}

function plain<R>(result: PgResultLike): CachedQueryResult<R> {
  return {
    rows: result.rows as R[],
    rowCount: result.rowCount,
    command: result.command,
    fields: (result.fields ?? []).map((f) => ({ name: f.name, dataTypeID: f.dataTypeID })),
  }
}

/**
 * Wraps a `pg` Pool: `query(sql, params, { ttl, tags })` caches reads in `kit.queries`, and
 * writes declare the tags they invalidate with `{ invalidates: ['orders'] }`.
 *
 * @example
 * const db = cachedPool(kit, new pg.Pool())
 * const { rows } = await db.query('SELECT count(*) FROM orders', [], { ttl: '1m', tags: ['orders'] })
 */
export function cachedPool<P extends PgQueryable>(
  kit: Redkit,
  pool: P,
  options: CachedPoolOptions = {},
): CachedPool<P> {
  return new CachedPool(kit, pool, options)
}
