import pg from 'pg'

/** Connection settings from the standard PG* variables, defaulting to the local test database. */
export function postgresConfig(): pg.PoolConfig {
  return {
    host: process.env.PGHOST ?? '127.0.0.1',
    port: Number(process.env.PGPORT ?? 5432),
    database: process.env.PGDATABASE ?? 'test',
    user: process.env.PGUSER ?? process.env.USER ?? 'postgres',
    ...(process.env.PGPASSWORD ? { password: process.env.PGPASSWORD } : {}),
    max: 10,
    connectionTimeoutMillis: 5000,
  }
}

/**
 * A pool on the test database, checked with one query. Fails (never skips) with a message that
 * says how to get PostgreSQL when it is not reachable.
 */
export async function connectPostgres(): Promise<pg.Pool> {
  const config = postgresConfig()
  const pool = new pg.Pool(config)
  try {
    await pool.query('SELECT 1')
  } catch (error) {
    await pool.end().catch(() => undefined)
    throw new Error(
      `PostgreSQL is not reachable at ${config.user}@${config.host}:${config.port}/${config.database} ` +
        `(${(error as Error).message}). These integration tests need a real server: start PostgreSQL ` +
        '(the CI script .ci/run installs and starts it) or point the standard PGHOST, PGPORT, PGUSER, ' +
        'PGDATABASE, PGPASSWORD variables at one.',
    )
  }
  return pool
}
