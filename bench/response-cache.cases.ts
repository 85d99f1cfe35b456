/**
 * HTTP cases of the response-cache bench, built in the pinned server process by bench/lib/serve.ts.
 * Every case answers GET /products with the same 2 KB JSON body; `check()` reports how often the
 * route handler itself ran (1 for a cache case that really served hits).
 */
import apicache from 'apicache'
import express, { type RequestHandler } from 'express'
import { Redis } from 'ioredis'
import { responseCache } from '../middleware/index.js'
import { createRedkit } from '../src/index.js'
import type { BuiltCase } from './lib/http.js'

interface Context {
  url: string
  prefix: string
}

/** About 2 KB of JSON. */
export const BODY = {
  items: Array.from({ length: 20 }, (_, i) => ({ id: i, name: `product ${i}`, price: 10 + i, stock: i * 3 })),
}
const BODY_TEXT = JSON.stringify(BODY)
const REDIS_KEY = 'bench:response-cache:body'

function counting(): { handler: RequestHandler; calls: () => number } {
  let calls = 0
  return {
    calls: () => calls,
    handler: (_req, res) => {
      calls++
      res.json(BODY)
    },
  }
}

function redkitCase(l1: boolean) {
  return async (context: Record<string, unknown>): Promise<BuiltCase> => {
    const { url, prefix } = context as unknown as Context
    const kit = createRedkit({ redis: url, prefix, configFile: false, env: {} })
    const { handler, calls } = counting()
    const app = express()
    app.get('/products', responseCache(kit, { ttl: '1h', l1 }), handler)
    return { app, close: () => kit.close(), check: () => ({ handlerCalls: calls() }) }
  }
}

export const cases: Record<string, (context: Record<string, unknown>) => Promise<BuiltCase>> = {
  /** (a) Express returning the body from memory. */
  async express() {
    const { handler, calls } = counting()
    const app = express()
    app.get('/products', handler)
    return { app, check: () => ({ handlerCalls: calls() }) }
  },

  /** (b) Express doing one ioredis GET per request. */
  async 'express + ioredis GET'(context) {
    const { url } = context as unknown as Context
    const redis = new Redis(url, { enableAutoPipelining: true })
    await redis.set(REDIS_KEY, BODY_TEXT)
    const app = express()
    app.get('/products', async (_req, res) => {
      const text = await redis.get(REDIS_KEY)
      res.type('application/json').send(text)
    })
    return { app, close: async () => void (await redis.quit()) }
  },

  /** Anchor: apicache with its in-process memory store. */
  async 'apicache memory'() {
    const { handler, calls } = counting()
    const app = express()
    app.get('/products', apicache.newInstance({ defaultDuration: '1 hour' }).middleware(), handler)
    return { app, check: () => ({ handlerCalls: calls() }) }
  },

  'responseCache hit (L1)': redkitCase(true),
  'responseCache hit (Redis, L1 off)': redkitCase(false),
}
