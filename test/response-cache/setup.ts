import type { Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import express, { type Express, type RequestHandler } from 'express'
import { afterAll, beforeAll } from 'vitest'
import { createRedkit, type Redkit } from '../../src/index.js'
import { type StandaloneRedis, startRedis, uniquePrefix } from '../helpers/index.js'

/** A kit on `url` with the given prefix (two kits with one prefix stand for two instances). */
export function makeKit(url: string, prefix: string): Redkit {
  return createRedkit({ redis: url, prefix, configFile: false, env: {} })
}

/** An Express 5 app with `cache` mounted on every path and `routes` added after it. */
export function appWith(cache: RequestHandler, routes: (app: Express) => void): Express {
  const app = express()
  app.use(cache)
  routes(app)
  return app
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** Polls `check` until it is true or `ms` passed. */
export async function eventually(check: () => boolean | Promise<boolean>, ms = 3000): Promise<void> {
  const deadline = Date.now() + ms
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('condition not met in time')
    await sleep(20)
  }
}

/** Resolves with the key of the `count`th store on `kit` from now. */
export function nextStore(kit: Redkit, count = 1): Promise<string> {
  let left = count
  return new Promise((resolve) => {
    const off = kit.on('cache:store', (e) => {
      if (--left > 0) return
      off()
      resolve(e.key)
    })
  })
}

/** Serves `app` on a free loopback port (for requests that must go over a real socket). */
export function listen(app: Express): Promise<{ server: Server; url: string }> {
  return new Promise((resolve) => {
    const server = app.listen(0, '127.0.0.1', () => {
      resolve({ server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` })
    })
  })
}

/**
 * Two kits with one prefix on a server of their own, standing for two instances of one app: started
 * before the file's tests (`use` receives them) and stopped after them.
 */
export function twoInstances(name: string, use: (a: Redkit, b: Redkit) => void): void {
  let redis: StandaloneRedis | undefined
  const kits: Redkit[] = []
  beforeAll(async () => {
    redis = await startRedis()
    const prefix = uniquePrefix(name)
    kits.push(makeKit(redis.url, prefix), makeKit(redis.url, prefix))
    use(kits[0] as Redkit, kits[1] as Redkit)
  })
  afterAll(async () => {
    for (const kit of kits) await kit.close()
    await redis?.stop()
  })
}
