/**
 * Sessions over HTTP: a request that reads its (logged-in) session and touches it, then one that
 * changes a field of it (a save), with
 * redkit's `session()` and its store inside plain express-session, against express-session +
 * connect-redis 7 on ioredis; baselines (a) plain Express and (b) Express + one ioredis GET.
 */
import { measureHttp } from './lib/http.js'
import { benchRedis } from './lib/redis.js'
import { printTable, twoPasses } from './lib/table.js'
import { sessionCookie } from './session.cases.js'

const MODULE = 'bench/session.cases.ts'

export default async function sessionBench(): Promise<void> {
  const redis = await benchRedis()
  try {
    let run = 0
    const http = (name: string, path = '/') => ({
      name,
      module: MODULE,
      path,
      headers: { cookie: sessionCookie() },
      get context() {
        return { url: redis.url, prefix: `bench-sess-${++run}` }
      },
    })
    const rows = await twoPasses(
      [
        http('express'),
        http('express + ioredis GET'),
        http('connect-redis 7 (ioredis)'),
        http('redkit RedisSessionStore in express-session'),
        http('redkit session()'),
      ],
      measureHttp,
    )
    printTable('session: read + touch a logged-in session per request', rows, 'connect-redis 7 (ioredis)')
    const writes = await twoPasses(
      [
        http('connect-redis 7 (ioredis)', '/write'),
        http('redkit RedisSessionStore in express-session', '/write'),
        http('redkit session()', '/write'),
      ],
      measureHttp,
    )
    printTable('session: read + change one field (a save) per request', writes, 'connect-redis 7 (ioredis)')
  } finally {
    await redis.stop()
  }
}
