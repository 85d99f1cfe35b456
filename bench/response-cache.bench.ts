/**
 * Response cache over HTTP, GET /products (2 KB JSON): a hit served from the in-process tier
 * against (a) plain Express returning the body from memory; a hit served from Redis (L1 off)
 * against (b) Express doing one ioredis GET; and apicache's memory store on the same route.
 */
import { type HttpCase, measureHttp } from './lib/http.js'
import { benchRedis } from './lib/redis.js'
import { printTable, twoPasses } from './lib/table.js'

const MODULE = 'bench/response-cache.cases.ts'

export default async function responseCacheBench(): Promise<void> {
  const redis = await benchRedis()
  try {
    let run = 0
    const http = (name: string): HttpCase => ({
      name,
      module: MODULE,
      path: '/products',
      get context() {
        return { url: redis.url, prefix: `bench-rc-${++run}` }
      },
    })
    const rows = await twoPasses(
      [
        http('express'),
        http('responseCache hit (L1)'),
        http('apicache memory'),
        http('express + ioredis GET'),
        http('responseCache hit (Redis, L1 off)'),
      ],
      measureHttp,
    )
    printTable('response cache: GET /products (2 KB JSON), hits', rows, 'express')
    printTable('response cache: GET /products (2 KB JSON), Redis tier', rows, 'express + ioredis GET')
  } finally {
    await redis.stop()
  }
}
