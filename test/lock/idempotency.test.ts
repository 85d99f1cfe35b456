import express from 'express'
import request from 'supertest'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { idempotency, lockRoute } from '../../middleware/index.js'
import { ConfigError, createRedkit, type Redkit } from '../../src/index.js'
import { type StandaloneRedis, startRedis, uniquePrefix } from '../helpers/redis-server.js'

const prefix = uniquePrefix('idem')
let redis: StandaloneRedis
let kitA: Redkit
let kitB: Redkit

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

beforeAll(async () => {
  redis = await startRedis()
  kitA = createRedkit({ redis: redis.url, prefix, configFile: false, env: {} })
  kitB = createRedkit({ redis: redis.url, prefix, configFile: false, env: {} })
})
afterAll(async () => {
  await kitA?.close()
  await kitB?.close()
  await redis?.stop()
})

interface Counter {
  calls: number
}

function paymentsApp(
  kit: Redkit,
  counter: Counter,
  options: Parameters<typeof idempotency>[1] = {},
  delayMs = 0,
) {
  const app = express()
  app.use(express.json())
  app.use(idempotency(kit, options))
  app.post('/payments', async (req, res) => {
    counter.calls++
    if (delayMs) await sleep(delayMs)
    res
      .status(201)
      .set('X-Payment', `p-${counter.calls}`)
      .json({ id: counter.calls, amount: req.body.amount })
  })
  app.patch('/payments/:id', (req, res) => {
    counter.calls++
    res.json({ id: req.params.id, patched: true })
  })
  app.post('/fail', (_req, res) => {
    counter.calls++
    res.status(counter.calls === 1 ? 503 : 200).json({ attempt: counter.calls })
  })
  app.post('/binary', (_req, res) => {
    counter.calls++
    res.type('application/octet-stream').send(Buffer.from([0, 255, 1, 254, 10, 13]))
  })
  app.get('/payments', (_req, res) => {
    counter.calls++
    res.json({ list: [] })
  })
  return app
}

describe('idempotency: bad input', () => {
  const counter = { calls: 0 }
  let app: express.Express
  beforeAll(() => {
    app = paymentsApp(kitA, counter, { required: true })
  })

  it('answers 400 problem+json for a missing key when required', async () => {
    const res = await request(app).post('/payments').send({ amount: 1 })
    expect(res.status).toBe(400)
    expect(res.headers['content-type']).toMatch(/application\/problem\+json/)
    expect(res.body.title).toBe('Idempotency-Key is missing')
  })

  it('answers 400 problem+json for an empty, too long, malformed or repeated key', async () => {
    const bad = [
      '""',
      '"x'.padEnd(258, 'x') + '"',
      'x'.repeat(256),
      '"a\\b"',
      'two words',
      '"caf\u00e9"',
      '"a"b',
    ]
    for (const key of bad) {
      const res = await request(app).post('/payments').set('Idempotency-Key', key).send({ amount: 1 })
      expect(res.status, key).toBe(400)
      expect(res.headers['content-type']).toMatch(/application\/problem\+json/)
      expect(res.body.title).toBe('Invalid Idempotency-Key')
    }
    const empty = await request(app).post('/payments').set('Idempotency-Key', '').send({ amount: 1 })
    expect(empty.status).toBe(400)
    expect(empty.headers['content-type']).toMatch(/application\/problem\+json/)
    const twice = await request(app)
      .post('/payments')
      // Two header lines (Node sends an array as one line per value).
      .set('Idempotency-Key', ['"a"', '"b"'] as unknown as string)
      .send({ amount: 1 })
    expect(twice.status).toBe(400)
    expect(counter.calls).toBe(0)
  })

  it('accepts a 255-character key, quoted (sf-string) or bare', async () => {
    const long = 'k'.repeat(255)
    expect(
      (await request(app).post('/payments').set('Idempotency-Key', long).send({ amount: 1 })).status,
    ).toBe(201)
    const quoted = await request(app)
      .post('/payments')
      .set('Idempotency-Key', `"${long}"`)
      .send({ amount: 1 })
    // The quoted form names the same key: a replay.
    expect(quoted.status).toBe(201)
    expect(quoted.headers['idempotent-replayed']).toBe('true')
  })

  it('rejects bad options at creation with ConfigError', () => {
    expect(() => idempotency(kitA, { ttl: 'forever' })).toThrow(ConfigError)
    expect(() => idempotency(kitA, { methods: [''] })).toThrow(ConfigError)
    expect(() => idempotency(kitA, { replayHeader: 'bad header' })).toThrow(ConfigError)
    expect(() => idempotency(kitA, { lease: 10 })).toThrow(ConfigError)
  })
})

describe('idempotency: replay, conflicts, mismatches', () => {
  it('replays the stored status, headers and body for a retry without running the handler', async () => {
    const counter = { calls: 0 }
    const replays: unknown[] = []
    const off = kitA.on('idempotency:replay', (p) => replays.push(p))
    const app = paymentsApp(kitA, counter)
    const first = await request(app).post('/payments').set('Idempotency-Key', '"pay-1"').send({ amount: 10 })
    const second = await request(app).post('/payments').set('Idempotency-Key', '"pay-1"').send({ amount: 10 })
    expect(first.status).toBe(201)
    expect(first.headers['idempotent-replayed']).toBeUndefined()
    expect(second.status).toBe(201)
    expect(second.headers['idempotent-replayed']).toBe('true')
    expect(second.headers['x-payment']).toBe('p-1')
    expect(second.headers['content-type']).toBe(first.headers['content-type'])
    expect(second.body).toEqual(first.body)
    expect(counter.calls).toBe(1)
    expect(replays).toHaveLength(1)
    off()
  })

  it('answers 422 for the same key with a different body, path or method', async () => {
    const counter = { calls: 0 }
    const app = paymentsApp(kitA, counter)
    await request(app).post('/payments').set('Idempotency-Key', 'pay-2').send({ amount: 10 })
    const other = await request(app).post('/payments').set('Idempotency-Key', 'pay-2').send({ amount: 11 })
    expect(other.status).toBe(422)
    expect(other.headers['content-type']).toMatch(/application\/problem\+json/)
    const patch = await request(app).patch('/payments/1').set('Idempotency-Key', 'pay-2').send({ amount: 10 })
    expect(patch.status).toBe(422)
    expect(counter.calls).toBe(1)
    // Key order in a JSON body does not change the fingerprint.
    const reordered = await request(app)
      .post('/payments')
      .set('Idempotency-Key', 'pay-3')
      .send({ amount: 5, currency: 'EUR' })
    const again = await request(app)
      .post('/payments')
      .set('Idempotency-Key', 'pay-3')
      .send({ currency: 'EUR', amount: 5 })
    expect(again.status).toBe(reordered.status)
    expect(again.headers['idempotent-replayed']).toBe('true')
  })

  it('answers 409 with Retry-After to a retry while the first request still runs', async () => {
    const counter = { calls: 0 }
    const app = paymentsApp(kitA, counter, {}, 300)
    const first = request(app).post('/payments').set('Idempotency-Key', 'pay-4').send({ amount: 1 })
    const firstDone = first.then((r) => r)
    await sleep(100)
    const retry = await request(app).post('/payments').set('Idempotency-Key', 'pay-4').send({ amount: 1 })
    expect(retry.status).toBe(409)
    expect(retry.headers['retry-after']).toBe('1')
    expect(retry.headers['content-type']).toMatch(/application\/problem\+json/)
    expect((await firstDone).status).toBe(201)
    expect(counter.calls).toBe(1)
  })

  it('does not store a 5xx response, so a retry runs the handler again', async () => {
    const counter = { calls: 0 }
    const app = paymentsApp(kitA, counter)
    const first = await request(app).post('/fail').set('Idempotency-Key', 'f-1').send({})
    expect(first.status).toBe(503)
    const second = await request(app).post('/fail').set('Idempotency-Key', 'f-1').send({})
    expect(second.status).toBe(200)
    expect(counter.calls).toBe(2)
    const third = await request(app).post('/fail').set('Idempotency-Key', 'f-1').send({})
    expect(third.headers['idempotent-replayed']).toBe('true')
    expect(counter.calls).toBe(2)
  })

  it('replays binary bodies byte for byte', async () => {
    const counter = { calls: 0 }
    const app = paymentsApp(kitA, counter)
    const parse = (res: request.Response, cb: (err: Error | null, body: Buffer) => void) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => cb(null, Buffer.concat(chunks)))
    }
    const first = await request(app).post('/binary').set('Idempotency-Key', 'b-1').buffer(true).parse(parse)
    const second = await request(app).post('/binary').set('Idempotency-Key', 'b-1').buffer(true).parse(parse)
    expect(second.headers['idempotent-replayed']).toBe('true')
    expect(Buffer.compare(first.body as Buffer, second.body as Buffer)).toBe(0)
    expect(counter.calls).toBe(1)
  })

  it('scopes keys per client and leaves GET and unkeyed requests alone', async () => {
    const counter = { calls: 0 }
    const app = paymentsApp(kitA, counter, { scope: (req) => String(req.headers['x-user']) })
    await request(app)
      .post('/payments')
      .set('x-user', 'ann')
      .set('Idempotency-Key', 'same')
      .send({ amount: 1 })
    const bob = await request(app)
      .post('/payments')
      .set('x-user', 'bob')
      .set('Idempotency-Key', 'same')
      .send({ amount: 1 })
    expect(bob.headers['idempotent-replayed']).toBeUndefined()
    expect(counter.calls).toBe(2)
    await request(app).get('/payments').set('Idempotency-Key', 'same')
    await request(app).post('/payments').send({ amount: 1 })
    expect(counter.calls).toBe(4)
  })
})

describe('idempotency: what is replayed', () => {
  it('replays the headers a handler passed to writeHead', async () => {
    const counter = { calls: 0 }
    const app = express()
    // Without X-Powered-By nothing is set before writeHead, and Node keeps its headers to itself.
    app.disable('x-powered-by')
    app.use(express.json())
    app.use(idempotency(kitA))
    app.post('/orders', (_req, res) => {
      counter.calls++
      const body = JSON.stringify({ id: 9 })
      res.writeHead(201, { 'Content-Type': 'application/json', Location: '/orders/9' })
      res.end(body)
    })
    app.post('/created', (_req, res) => {
      counter.calls++
      res.writeHead(201, 'Made', { 'Content-Type': 'text/plain', 'X-Order': '10' })
      res.end('made')
    })
    const first = await request(app).post('/orders').set('Idempotency-Key', 'wh-1').send({})
    const second = await request(app).post('/orders').set('Idempotency-Key', 'wh-1').send({})
    expect(second.headers['idempotent-replayed']).toBe('true')
    expect(second.status).toBe(201)
    expect(second.headers['content-type']).toBe('application/json')
    expect(second.headers.location).toBe('/orders/9')
    expect(second.body).toEqual(first.body)
    const made = await request(app).post('/created').set('Idempotency-Key', 'wh-2').send({})
    const madeAgain = await request(app).post('/created').set('Idempotency-Key', 'wh-2').send({})
    expect(madeAgain.headers['idempotent-replayed']).toBe('true')
    expect(madeAgain.headers['content-type']).toBe('text/plain')
    expect(madeAgain.headers['x-order']).toBe('10')
    expect(madeAgain.text).toBe(made.text)
    expect(counter.calls).toBe(2)
  })

  it('keeps the headers earlier middleware set on this request (CORS, request id) over the stored ones', async () => {
    const counter = { calls: 0 }
    let requests = 0
    const app = express()
    app.use((req, res, next) => {
      // A CORS middleware allowing several origins, and a request id.
      if (req.headers.origin) {
        res.setHeader('Access-Control-Allow-Origin', req.headers.origin)
        res.setHeader('Vary', 'Origin')
      }
      res.setHeader('X-Request-Id', `r-${++requests}`)
      next()
    })
    app.use(express.json())
    app.use(idempotency(kitA))
    app.post('/payments', (_req, res) => {
      counter.calls++
      res.status(201).set('X-Payment', `p-${counter.calls}`).json({ id: counter.calls })
    })
    const first = await request(app)
      .post('/payments')
      .set('Origin', 'https://a.example')
      .set('Idempotency-Key', 'cors-1')
      .send({ amount: 1 })
    expect(first.headers['access-control-allow-origin']).toBe('https://a.example')
    const second = await request(app)
      .post('/payments')
      .set('Origin', 'https://b.example')
      .set('Idempotency-Key', 'cors-1')
      .send({ amount: 1 })
    expect(second.headers['idempotent-replayed']).toBe('true')
    expect(second.headers['access-control-allow-origin']).toBe('https://b.example')
    expect(second.headers.vary).toBe('Origin')
    expect(second.headers['x-request-id']).toBe('r-2')
    // What only the handler set is still replayed.
    expect(second.headers['x-payment']).toBe('p-1')
    expect(second.body).toEqual({ id: 1 })
    expect(counter.calls).toBe(1)
  })
})

describe('idempotency: answers that are not the result', () => {
  it('does not store a 409 from a route lock behind it, so the retry runs the handler', async () => {
    const counter = { calls: 0 }
    const app = express()
    app.use(express.json())
    app.use(idempotency(kitA))
    app.post(
      '/orders/:id/ship',
      lockRoute(kitA, { resource: (req) => `order:${req.params.id}` }),
      (req, res) => {
        counter.calls++
        res.json({ shipped: req.params.id })
      },
    )
    const held = await kitA.locks.acquire('order:7')
    const busy = await request(app).post('/orders/7/ship').set('Idempotency-Key', 'ship-7').send({})
    expect(busy.status).toBe(409)
    expect(busy.body.title).toBe('Resource is locked')
    await held.release()
    const retry = await request(app).post('/orders/7/ship').set('Idempotency-Key', 'ship-7').send({})
    expect(retry.status).toBe(200)
    expect(retry.headers['idempotent-replayed']).toBeUndefined()
    expect(retry.body).toEqual({ shipped: '7' })
    expect(counter.calls).toBe(1)
    const again = await request(app).post('/orders/7/ship').set('Idempotency-Key', 'ship-7').send({})
    expect(again.headers['idempotent-replayed']).toBe('true')
    expect(again.body).toEqual({ shipped: '7' })
    expect(counter.calls).toBe(1)
  })

  it('does not store 408, 425 or 429 answers (a timeout, too early, rate limited)', async () => {
    for (const status of [408, 425, 429]) {
      const counter = { calls: 0 }
      let refuse = true
      const app = express()
      app.use(express.json())
      app.use(idempotency(kitA))
      app.post(
        '/limited',
        (_req, res, next) => {
          if (!refuse) return next()
          res.status(status).set('Retry-After', '1').json({ status })
        },
        (_req, res) => {
          counter.calls++
          res.status(201).json({ done: true })
        },
      )
      const key = `limited-${status}`
      const first = await request(app).post('/limited').set('Idempotency-Key', key).send({})
      expect(first.status).toBe(status)
      refuse = false
      const retry = await request(app).post('/limited').set('Idempotency-Key', key).send({})
      expect(retry.status).toBe(201)
      expect(retry.headers['idempotent-replayed']).toBeUndefined()
      expect(counter.calls).toBe(1)
    }
  })
})

describe('idempotency: a response that cannot be ended', () => {
  it('drops the connection, reports the error and frees the key when the real end throws', async () => {
    const rejections: unknown[] = []
    const onRejection = (reason: unknown) => rejections.push(reason)
    process.on('unhandledRejection', onRejection)
    const errors: Array<{ error: Error; connection: string }> = []
    const off = kitA.on('error', (p) => errors.push(p))
    const counter = { calls: 0 }
    // Statuses Node refuses, and a body that is neither text nor bytes.
    const bad = [
      { key: 'status-1000', status: 1000, body: 'x', code: 'ERR_HTTP_INVALID_STATUS_CODE' },
      { key: 'status-99', status: 99, body: 'x', code: 'ERR_HTTP_INVALID_STATUS_CODE' },
      { key: 'number-body', status: 200, body: 42, code: 'ERR_INVALID_ARG_TYPE' },
    ]
    let spoil: (typeof bad)[number] | undefined
    const app = express()
    app.use(express.json())
    app.use(idempotency(kitA))
    app.post('/end', (_req, res) => {
      counter.calls++
      const broken = spoil
      spoil = undefined
      if (!broken) {
        res.status(201).json({ ok: true })
        return
      }
      res.statusCode = broken.status
      res.end(broken.body as string)
    })
    const outcome = (key: string) =>
      request(app)
        .post('/end')
        .set('Idempotency-Key', key)
        .send({})
        .timeout(2000)
        .then(
          (r) => r.status,
          (e: NodeJS.ErrnoException) => e.code ?? 'error',
        )
    try {
      for (const broken of bad) {
        const { key, code } = broken
        errors.length = 0
        spoil = broken
        const calls = counter.calls
        expect(await outcome(key)).toBe('ECONNRESET')
        expect(errors.map((e) => [e.connection, (e.error as NodeJS.ErrnoException).code])).toEqual([
          ['idempotency', code],
        ])
        // Nothing was stored and the key is free: the retry runs the handler.
        expect(await outcome(key)).toBe(201)
        expect(counter.calls).toBe(calls + 2)
      }
      expect(rejections).toEqual([])
    } finally {
      off()
      process.off('unhandledRejection', onRejection)
    }
  })
})

describe('idempotency: custom fingerprint', () => {
  it('uses any text as a fingerprint, separators included', async () => {
    const counter = { calls: 0 }
    const app = paymentsApp(kitA, counter, { fingerprint: (req) => `order|${req.body.amount}|x` })
    const first = await request(app).post('/payments').set('Idempotency-Key', 'fp-1').send({ amount: 3 })
    const replay = await request(app)
      .post('/payments')
      .set('Idempotency-Key', 'fp-1')
      .send({ amount: 3, note: 'ignored' })
    const other = await request(app).post('/payments').set('Idempotency-Key', 'fp-1').send({ amount: 4 })
    expect(first.status).toBe(201)
    expect(replay.headers['idempotent-replayed']).toBe('true')
    expect(other.status).toBe(422)
    expect(counter.calls).toBe(1)
  })
})

describe('idempotency: concurrency across instances', () => {
  it('runs the handler once for 20 concurrent POSTs with one key across two kits', async () => {
    const counter = { calls: 0 }
    const apps = [paymentsApp(kitA, counter, {}, 150), paymentsApp(kitB, counter, {}, 150)]
    const servers = apps.map((app) => app.listen(0, '127.0.0.1'))
    await Promise.all(servers.map((s) => new Promise((r) => s.once('listening', r))))
    try {
      const responses = await Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          request(servers[i % 2]!)
            .post('/payments')
            .set('Idempotency-Key', '"burst-1"')
            .send({ amount: 99 }),
        ),
      )
      expect(counter.calls).toBe(1)
      const ok = responses.filter((r) => r.status === 201)
      const conflicts = responses.filter((r) => r.status === 409)
      expect(ok.length + conflicts.length).toBe(20)
      expect(ok.length).toBeGreaterThanOrEqual(1)
      for (const r of ok) expect(r.body).toEqual({ id: 1, amount: 99 })
      // Once the first is done, every retry is the stored response.
      const later = await request(servers[1]!)
        .post('/payments')
        .set('Idempotency-Key', '"burst-1"')
        .send({ amount: 99 })
      expect(later.status).toBe(201)
      expect(later.headers['idempotent-replayed']).toBe('true')
      expect(later.body).toEqual({ id: 1, amount: 99 })
      expect(counter.calls).toBe(1)
    } finally {
      await Promise.all(servers.map((s) => new Promise((r) => s.close(r))))
    }
  })
})
