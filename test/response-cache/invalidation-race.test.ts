import type { Express } from 'express'
import request from 'supertest'
import { describe, expect, it } from 'vitest'
import { responseCache } from '../../middleware/response-cache.js'
import type { Redkit } from '../../src/index.js'
import { appWith, eventually, listen, nextStore, sleep, twoInstances } from './setup.js'

let kitA: Redkit
let kitB: Redkit
let n = 0
const path = (name: string) => `/r${++n}/${name}`

// Two kits with one prefix stand for two instances of one app.
twoInstances('rc-race', (a, b) => {
  kitA = a
  kitB = b
})

/** A promise and the function that resolves it. */
function gate(): { wait: Promise<void>; open: () => void } {
  let open!: () => void
  const wait = new Promise<void>((resolve) => {
    open = resolve
  })
  return { wait, open }
}

/** Starts a request now (supertest starts on `then`). */
function start(app: Express, p: string, headers: Record<string, string> = {}) {
  return request(app)
    .get(p)
    .set(headers)
    .then((r) => r)
}

/** Resolves once `check` is true (polled). */
async function until(check: () => boolean): Promise<void> {
  while (!check()) await sleep(5)
}

/**
 * A product route tagged `tag`: it reads the current data first, then (on its first call) waits at
 * `slow` before answering, as a handler that read the database and then did slower work.
 */
function productRoute(data: { v: number }, tag: string, slow: Promise<void>) {
  let calls = 0
  return {
    calls: () => calls,
    route: async (_req: import('express').Request, res: import('express').Response) => {
      calls++
      const seen = data.v
      if (calls === 1) await slow
      res.set('Cache-Control', 'max-age=600')
      res.set('Surrogate-Key', tag)
      res.send(`v${seen}`)
    },
  }
}

describe('an invalidation while the origin runs', () => {
  it('invalidateTags: the response read before it is not stored as valid after it', async () => {
    const p = path('tags')
    const tag = `product-${n}`
    const data = { v: 1 }
    const slow = gate()
    let calls = 0
    const app = appWith(responseCache(kitA), (a) =>
      a.get(p, async (_req, res) => {
        calls++
        const seen = data.v
        if (seen === 1) await slow.wait
        res.set('Cache-Control', 'max-age=600')
        res.set('Surrogate-Key', tag)
        res.send(`v${seen}`)
      }),
    )
    const first = start(app, p)
    await until(() => calls === 1)
    await kitA.cache.invalidateTags([tag])
    data.v = 2
    slow.open()
    expect((await first).text).toBe('v1')
    await sleep(100)
    const next = await request(app).get(p)
    expect(next.text).toBe('v2')
  })

  it('a PUT on the URL: the GET response read before it is not stored', async () => {
    const p = path('put')
    const data = { v: 1 }
    const slow = gate()
    let calls = 0
    const app = appWith(responseCache(kitA), (a) => {
      a.get(p, async (_req, res) => {
        calls++
        const seen = data.v
        if (seen === 1) await slow.wait
        res.set('Cache-Control', 'max-age=600')
        res.send(`v${seen}`)
      })
      a.put(p, (_req, res) => {
        data.v = 2
        res.status(204).end()
      })
    })
    const first = start(app, p)
    await until(() => calls === 1)
    expect((await request(app).put(p)).status).toBe(204)
    await sleep(50)
    slow.open()
    expect((await first).text).toBe('v1')
    await sleep(100)
    expect((await request(app).get(p)).text).toBe('v2')
  })

  it('Vary: a purge while a variant is fetched does not bring back the variants stored before it', async () => {
    const p = path('vary')
    const data = { v: 1 }
    const slow = gate()
    let calls = 0
    const app = appWith(responseCache(kitA), (a) => {
      a.get(p, async (req, res) => {
        calls++
        const seen = data.v
        if (req.get('accept-language') === 'fr' && seen === 1) await slow.wait
        res.set('Cache-Control', 'max-age=600')
        res.set('Vary', 'Accept-Language')
        res.send(`v${seen} ${req.get('accept-language')}`)
      })
      a.put(p, (_req, res) => {
        data.v = 2
        res.status(204).end()
      })
    })
    const stored = nextStore(kitA, 2) // the variant marker and the variant
    expect((await request(app).get(p).set('Accept-Language', 'en')).text).toBe('v1 en')
    await stored
    expect((await request(app).get(p).set('Accept-Language', 'en')).headers['x-cache']).toBe('HIT')
    const fr = start(app, p, { 'Accept-Language': 'fr' })
    await until(() => calls === 2)
    expect((await request(app).put(p)).status).toBe(204)
    await sleep(50)
    slow.open()
    expect((await fr).text).toBe('v1 fr')
    await sleep(100)
    const en = await request(app).get(p).set('Accept-Language', 'en')
    expect([en.text, en.headers['x-cache']]).toEqual(['v2 en', 'MISS'])
  })

  it('on another instance: invalidateTags there is not undone by the response read before it here', async () => {
    const tag = `product-${n + 1}`
    const p = path('tags-two')
    const data = { v: 1 }
    const slow = gate()
    const route = productRoute(data, tag, slow.wait)
    const appA = appWith(responseCache(kitA), (a) => a.get(p, route.route))
    const first = start(appA, p)
    await until(() => route.calls() === 1)
    await kitB.cache.invalidateTags([tag])
    data.v = 2
    slow.open()
    expect((await first).text).toBe('v1')
    // News that reaches this instance only after its write takes the write back.
    await eventually(async () => (await request(appA).get(p)).text === 'v2')
  })

  it('on another instance: a PUT there is not undone by the response read before it here', async () => {
    const p = path('put-two')
    const data = { v: 1 }
    const slow = gate()
    const route = productRoute(data, `product-${n}`, slow.wait)
    const appA = appWith(responseCache(kitA), (a) => a.get(p, route.route))
    const appB = appWith(responseCache(kitB), (a) =>
      a.put(p, (_req, res) => {
        data.v = 2
        res.status(204).end()
      }),
    )
    const a = await listen(appA)
    const b = await listen(appB)
    try {
      const first = fetch(`${a.url}${p}`).then((r) => r.text())
      await until(() => route.calls() === 1)
      // The purge lands in Redis right before the write; its message reaches A only after it.
      const put = fetch(`${b.url}${p}`, { method: 'PUT' })
      await sleep(20)
      slow.open()
      await put
      expect(await first).toBe('v1')
      await eventually(async () => (await fetch(`${a.url}${p}`).then((r) => r.text())) === 'v2')
    } finally {
      a.server.close()
      b.server.close()
    }
  })
})
