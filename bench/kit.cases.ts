/**
 * HTTP cases of the kit bench, built in the pinned server process by bench/lib/serve.ts: an
 * Express route that answers a 2 KB value read from Redis with one GET.
 */
import express from 'express'
import { Redis } from 'ioredis'
import { createRedkit } from '../src/index.js'
import type { BuiltCase } from './lib/http.js'

export const KEY = 'bench:kit:http-2kb'

interface Context {
  url: string
}

function app(get: () => Promise<string | null>, close: () => Promise<void>): BuiltCase {
  let reads = 0
  const a = express()
  a.get('/', async (_req, res) => {
    const value = await get()
    reads++
    res.type('text/plain').send(value)
  })
  return { app: a, close, check: () => ({ reads }) }
}

function plain(url: string, autoPipelining: boolean): BuiltCase {
  const redis = new Redis(url, { enableAutoPipelining: autoPipelining, commandTimeout: 1000 })
  return app(
    () => redis.get(KEY),
    async () => void (await redis.quit()),
  )
}

function kit(url: string, autoPipelining: boolean): BuiltCase {
  const k = createRedkit({ redis: url, prefix: 'bench', configFile: false, env: {}, autoPipelining })
  return app(
    () => k.hub.exec((r) => r.get(KEY)),
    () => k.close(),
  )
}

export const cases: Record<string, (context: Record<string, unknown>) => Promise<BuiltCase>> = {
  'express + ioredis GET': async (c) => plain((c as unknown as Context).url, false),
  'express + ioredis GET (autopipeline)': async (c) => plain((c as unknown as Context).url, true),
  'express + kit.hub.exec GET': async (c) => kit((c as unknown as Context).url, true),
  'express + kit.hub.exec GET (autoPipelining: false)': async (c) =>
    kit((c as unknown as Context).url, false),
}
