import { createHmac } from 'node:crypto'
import type { AddressInfo } from 'node:net'
import express from 'express'
import expressSession from 'express-session'
import request from 'supertest'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { RedisSessionStore, session } from '../../middleware/session.js'
import { ConfigError, createRedkit, type Redkit, SessionTooLargeError } from '../../src/index.js'
import { type StandaloneRedis, startRedis, uniquePrefix } from '../helpers/index.js'
import { cookieOf, SECRET, sessionApp } from './app.js'

let redis: StandaloneRedis
let kit: Redkit
let prefix: string

beforeAll(async () => {
  redis = await startRedis()
  prefix = uniquePrefix('session')
  kit = createRedkit({ redis: redis.url, prefix, configFile: false, env: {} })
})

afterAll(async () => {
  await kit.close()
  await redis.stop()
})

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const sid = (cookie: string) =>
  decodeURIComponent(cookie.split('=')[1] as string)
    .slice(2)
    .split('.')[0] as string
const keyOf = (id: string) => `${prefix}:session:{${id}}`

function callback<T>(run: (cb: (error: unknown, value?: T) => void) => void): Promise<T | undefined> {
  return new Promise((resolve, reject) => run((error, value) => (error ? reject(error) : resolve(value))))
}

describe('session() middleware: the express-session contract over HTTP', () => {
  it('logs in with regenerate, sets a safe cookie and keeps the session across requests', async () => {
    const app = sessionApp(kit)
    const agent = request.agent(app)
    const login = await agent.post('/account/login?user=alice').expect(200)
    const cookie = cookieOf(login.headers['set-cookie'])!
    expect(cookie).toBeDefined()
    const header = (login.headers['set-cookie'] as unknown as string[]).join(';')
    expect(header).toMatch(/HttpOnly/)
    expect(header).toMatch(/SameSite=Lax/)
    expect(header).not.toMatch(/Secure/)
    expect(sid(cookie)).toBe(login.body.id)
    const me = await agent.get('/account/me').expect(200)
    expect(me.body).toMatchObject({ id: login.body.id, userId: 'alice' })
    const stored = await kit.redis.hgetall(keyOf(login.body.id))
    expect(stored['.userId']).toBe('"alice"')
    expect(stored['#u']).toBe('alice')
  })

  it('marks the cookie Secure when the request is HTTPS per trust proxy', async () => {
    const res = await request(sessionApp(kit))
      .post('/account/login')
      .set('X-Forwarded-Proto', 'https')
      .expect(200)
    expect((res.headers['set-cookie'] as unknown as string[]).join(';')).toMatch(/Secure/)
  })

  it('sends no cookie and stores nothing for a visit that leaves the session empty', async () => {
    const before = (await callback<number>((cb) => new RedisSessionStore({ kit }).length(cb))) ?? 0
    const res = await request(sessionApp(kit)).get('/account/me').expect(401)
    expect(res.headers['set-cookie']).toBeUndefined()
    expect(await callback<number>((cb) => new RedisSessionStore({ kit }).length(cb))).toBe(before)
  })

  it('stores the session with the cookie maxAge as TTL and touch extends it on unchanged requests', async () => {
    const agent = request.agent(sessionApp(kit))
    const { body } = await agent.post('/account/login').expect(200)
    const ttl = await kit.redis.pttl(keyOf(body.id))
    expect(ttl).toBeGreaterThan(50_000)
    expect(ttl).toBeLessThanOrEqual(60_000)
    await kit.redis.pexpire(keyOf(body.id), 5_000)
    const version = await kit.redis.hget(keyOf(body.id), '#v')
    const me = await agent.get('/account/me').expect(200)
    expect(me.headers['set-cookie']).toBeUndefined() // not rolling
    expect(await kit.redis.pttl(keyOf(body.id))).toBeGreaterThan(50_000)
    expect(await kit.redis.hget(keyOf(body.id), '#v')).toBe(version) // touched, not rewritten
  })

  it('extends the TTL of an unchanged session in the same round trip as the read', async () => {
    const agent = request.agent(sessionApp(kit))
    const { body } = await agent.post('/account/login').expect(200)
    await kit.redis.pexpire(keyOf(body.id), 5_000)
    let commands = 0
    const off = kit.on('command', () => commands++)
    await agent.get('/account/me').expect(200)
    off()
    expect(commands).toBe(1)
    expect(await kit.redis.pttl(keyOf(body.id))).toBeGreaterThan(50_000)
    // listing sessions reads them without extending them
    await kit.redis.pexpire(keyOf(body.id), 5_000)
    await callback((cb) => new RedisSessionStore({ kit }).all(cb as never))
    expect(await kit.redis.pttl(keyOf(body.id))).toBeLessThanOrEqual(5_000)
  })

  it('a cookie maxAge changed without other changes is applied by the touch', async () => {
    const agent = request.agent(sessionApp(kit))
    const { body } = await agent.post('/account/login').expect(200)
    await agent.post('/account/remember?ms=600000').expect(200)
    expect(await kit.redis.pttl(keyOf(body.id))).toBeGreaterThan(500_000)
  })

  it('with disableTouch an unchanged request leaves the TTL alone', async () => {
    const agent = request.agent(sessionApp(kit, { disableTouch: true }))
    const { body } = await agent.post('/account/login').expect(200)
    await kit.redis.pexpire(keyOf(body.id), 5_000)
    await agent.get('/account/me').expect(200)
    expect(await kit.redis.pttl(keyOf(body.id))).toBeLessThanOrEqual(5_000)
  })

  it('with rolling sends a fresh cookie on every response and extends the TTL', async () => {
    const agent = request.agent(sessionApp(kit, { rolling: true }))
    const { body } = await agent.post('/account/login').expect(200)
    await kit.redis.pexpire(keyOf(body.id), 5_000)
    const me = await agent.get('/account/me').expect(200)
    expect(cookieOf(me.headers['set-cookie'])).toBeDefined()
    expect(await kit.redis.pttl(keyOf(body.id))).toBeGreaterThan(50_000)
  })

  it('regenerate destroys the old id: the pre-login cookie no longer has a session', async () => {
    const agent = request.agent(sessionApp(kit))
    const first = await agent.post('/account/set?theme=dark').expect(200)
    const oldCookie = cookieOf(first.headers['set-cookie'])!
    const oldId = sid(oldCookie)
    expect(await kit.redis.exists(keyOf(oldId))).toBe(1)
    const login = await agent.post('/account/login').expect(200)
    expect(login.body.id).not.toBe(oldId)
    expect(await kit.redis.exists(keyOf(oldId))).toBe(0)
    await request(sessionApp(kit)).get('/account/me').set('Cookie', oldCookie).expect(401)
  })

  it('destroy (logout) deletes the session and its index entry', async () => {
    const agent = request.agent(sessionApp(kit))
    const { body } = await agent.post('/account/login?user=dora').expect(200)
    expect((await kit.sessions.listForUser('dora')).map((s) => s.id)).toEqual([body.id])
    await agent.post('/account/logout').expect(200)
    expect(await kit.redis.exists(keyOf(body.id))).toBe(0)
    expect(await kit.sessions.listForUser('dora')).toEqual([])
    expect(
      await kit.redis.zcard(`${prefix}:session-user:{${kit.sessions.repository.userTag('dora')}}:dora`),
    ).toBe(0)
    await agent.get('/account/me').expect(401)
  })

  it('ignores a tampered cookie, an unsigned cookie and an unknown id (new empty session)', async () => {
    const agent = request.agent(sessionApp(kit))
    const login = await agent.post('/account/login').expect(200)
    const cookie = cookieOf(login.headers['set-cookie'])!
    const value = decodeURIComponent(cookie.split('=')[1] as string)
    const tampered = `sid=${encodeURIComponent(`${value.slice(0, -2)}xx`)}`
    await request(sessionApp(kit)).get('/account/me').set('Cookie', tampered).expect(401)
    await request(sessionApp(kit)).get('/account/me').set('Cookie', `sid=${login.body.id}`).expect(401)
    const unknown = 'unknown-session-id-0123456789abcdef'
    const signature = createHmac('sha256', SECRET).update(unknown).digest('base64').replace(/=+$/, '')
    const signed = `sid=${encodeURIComponent(`s:${unknown}.${signature}`)}`
    const res = await request(sessionApp(kit)).get('/account/me').set('Cookie', signed).expect(401)
    expect(res.headers['set-cookie']).toBeUndefined()
    expect(await kit.redis.exists(keyOf(unknown))).toBe(0)
  })

  it('treats a stored entry that no longer parses as no session and removes it', async () => {
    const invalid: string[] = []
    const off = kit.on('session:invalid', ({ reason }) => invalid.push(reason))
    const agent = request.agent(sessionApp(kit))
    const { body } = await agent.post('/account/login').expect(200)
    await kit.redis.hset(keyOf(body.id), '.userId', '{not json')
    await agent.get('/account/me').expect(401)
    expect(await kit.redis.exists(keyOf(body.id))).toBe(0)
    // a key of another type (written by something else) is handled the same way
    const other = request.agent(sessionApp(kit))
    const second = await other.post('/account/login').expect(200)
    await kit.redis.del(keyOf(second.body.id))
    await kit.redis.set(keyOf(second.body.id), 'garbage')
    await other.get('/account/me').expect(401)
    expect(await kit.redis.exists(keyOf(second.body.id))).toBe(0)
    off()
    expect(invalid).toEqual(['unparseable', 'wrong type'])
  })

  it('refuses an oversized session with a clear 500 problem and keeps the stored one', async () => {
    const agent = request.agent(sessionApp(kit, { maxSize: 10_000 }))
    const { body } = await agent.post('/account/login').expect(200)
    const res = await agent.post('/account/big?bytes=20000').expect(500)
    expect(res.headers['content-type']).toMatch(/application\/problem\+json/)
    expect(res.body.title).toBe('Session too large')
    expect(res.body.detail).toMatch(/maxSize of 10000 bytes/)
    expect(JSON.stringify(res.body)).not.toMatch(/at .*\.ts/)
    expect(await kit.redis.hget(keyOf(body.id), '.blob')).toBeNull()
    await agent.get('/account/me').expect(200)
  })

  it('refuses the save that would take the merged session over maxSize; the session still saves afterwards', async () => {
    const store = new RedisSessionStore({ kit, maxSize: 50_000 })
    const cookie = { originalMaxAge: null, expires: null, path: '/', httpOnly: true }
    await callback((cb) => store.set('merged-size', { cookie, n: 0 } as never, cb))
    // Two requests load the small session; each adds 30 KB, under the limit on its own.
    const a = (await callback<Record<string, unknown>>((cb) => store.get('merged-size', cb as never)))!
    const b = (await callback<Record<string, unknown>>((cb) => store.get('merged-size', cb as never)))!
    a.first = 'x'.repeat(30_000)
    await callback((cb) => store.set('merged-size', a as never, cb))
    b.second = 'y'.repeat(30_000)
    const refused = await callback((cb) => store.set('merged-size', b as never, cb)).catch((e: unknown) => e)
    expect(refused).toBeInstanceOf(SessionTooLargeError)
    expect((refused as SessionTooLargeError).bytes).toBeGreaterThan(60_000)
    expect((refused as SessionTooLargeError).maxSize).toBe(50_000)
    expect(await kit.redis.hexists(keyOf('merged-size'), '.second')).toBe(0)
    // What is stored stays under the limit, so later saves of this session keep working.
    const c = (await callback<Record<string, unknown>>((cb) => store.get('merged-size', cb as never)))!
    c.n = 1
    await callback((cb) => store.set('merged-size', c as never, cb))
    expect(await kit.redis.hget(keyOf('merged-size'), '.n')).toBe('1')
  })

  it('a streamed response goes out before the save (a failure becomes an event); an explicit save before the first write makes it an error response', async () => {
    const failures: unknown[] = []
    const off = kit.on('error', ({ error }) => failures.push(error))
    const express = (await import('express')).default
    const app = express()
    app.use(session(kit, { secret: SECRET, maxSize: 1_000 }))
    app.get('/stream', (req, res) => {
      req.session.blob = 'x'.repeat(5_000)
      res.write('a')
      res.end('b')
    })
    app.get('/save-then-stream', (req, res, next) => {
      req.session.blob = 'x'.repeat(Number(req.query.bytes))
      req.session.save((error) => {
        if (error) return next(error)
        res.write('a')
        res.end('b')
      })
    })
    // Not guaranteed: the status and headers left with the first write, before the save ran.
    await request(app).get('/stream').expect(200, 'ab')
    await sleep(50)
    expect(failures.some((error) => error instanceof SessionTooLargeError)).toBe(true)
    // The pattern for streamed responses: save first, then stream.
    const refused = await request(app).get('/save-then-stream?bytes=5000').expect(500)
    expect(refused.body.title).toBe('Session too large')
    const ok = await request(app).get('/save-then-stream?bytes=10').expect(200, 'ab')
    expect(await kit.redis.hget(keyOf(sid(cookieOf(ok.headers['set-cookie'])!)), '.blob')).toBe(
      '"xxxxxxxxxx"',
    )
    off()
  })

  it('accepts a list of secrets: a cookie signed with the previous secret still works after rotation', async () => {
    const oldSecret = 'old-secret-0123456789-abcdefghijklmnopq'
    const before = request.agent(sessionApp(kit, { secret: oldSecret }))
    const login = await before.post('/account/login?user=rot').expect(200)
    const cookie = cookieOf(login.headers['set-cookie'])!
    const rotated = sessionApp(kit, { secret: [SECRET, oldSecret] })
    const me = await request(rotated).get('/account/me').set('Cookie', cookie).expect(200)
    expect(me.body.userId).toBe('rot')
    await request(sessionApp(kit)).get('/account/me').set('Cookie', cookie).expect(401)
  })

  it('refuses a missing or short secret at creation', () => {
    expect(() => session(kit, {} as never)).toThrow(ConfigError)
    expect(() => session(kit, { secret: 'short' })).toThrow(/at least 32 characters/)
    expect(() => session(kit, { secret: [SECRET, 'short'] })).toThrow(/session\.secret\[1\]/)
    expect(() => session(kit, { secret: [] })).toThrow(ConfigError)
    expect(() => session(kit, { secret: SECRET, onConflict: 'maybe' as never })).toThrow(/onConflict/)
    expect(() => new RedisSessionStore({ kit, ttl: 'soon' })).toThrow(ConfigError)
  })
})

describe('session() middleware: a response that cannot be ended', () => {
  it('drops the connection and reports the error, with no unhandled rejection, when end throws after the save', async () => {
    const rejections: unknown[] = []
    const onRejection = (reason: unknown) => rejections.push(reason)
    process.on('unhandledRejection', onRejection)
    const errors: Array<{ error: Error; connection: string }> = []
    const off = kit.on('error', (p) => errors.push(p))
    const app = express()
    app.use(session(kit, { secret: SECRET }))
    app.get('/bad', (req, res) => {
      req.session.views = 1
      // Node refuses it when the head is written, inside the end() that runs after the save.
      res.statusCode = 1000
      res.end('x')
    })
    const server = app.listen(0, '127.0.0.1')
    await new Promise((r) => server.once('listening', r))
    try {
      const { port } = server.address() as AddressInfo
      const answer = await Promise.race([
        fetch(`http://127.0.0.1:${port}/bad`).then(
          (r) => r.status,
          () => 'reset',
        ),
        sleep(2000).then(() => 'hung'),
      ])
      expect(answer).toBe('reset')
      expect(errors.map((e) => [e.connection, (e.error as NodeJS.ErrnoException).code])).toEqual([
        ['session', 'ERR_HTTP_INVALID_STATUS_CODE'],
      ])
      expect(rejections).toEqual([])
    } finally {
      off()
      process.off('unhandledRejection', onRejection)
      server.closeAllConnections()
      await new Promise((r) => server.close(r))
    }
  })
})

describe('no lost updates', () => {
  it('keeps both changes of two concurrent requests that change different fields', async () => {
    const conflicts: number[] = []
    const off = kit.on('session:conflict', () => conflicts.push(1))
    const agent = request.agent(sessionApp(kit))
    await agent.post('/account/login').expect(200)
    // Both requests load the session before either saves.
    await Promise.all([
      agent.post('/account/set?delay=150&a=1').expect(200),
      agent.post('/account/set?delay=150&b=2').expect(200),
    ])
    const me = await agent.get('/account/me').expect(200)
    expect(me.body).toMatchObject({ a: '1', b: '2', userId: 'alice' })
    off()
    expect(conflicts.length).toBe(1)
  })

  it('merges deletes too: a field removed by one request stays removed while another adds one', async () => {
    const agent = request.agent(sessionApp(kit))
    await agent.post('/account/login').expect(200)
    await agent.post('/account/set?a=1').expect(200)
    await Promise.all([
      agent.post('/account/set?delay=150&a=').expect(200),
      agent.post('/account/set?delay=150&c=3').expect(200),
    ])
    const me = await agent.get('/account/me').expect(200)
    expect(me.body.a).toBeUndefined()
    expect(me.body.c).toBe('3')
  })

  it("with onConflict 'reject' the second writer gets 409 and session:conflict, the first change stays", async () => {
    const conflicts: number[] = []
    const off = kit.on('session:conflict', () => conflicts.push(1))
    const agent = request.agent(sessionApp(kit, { onConflict: 'reject' }))
    await agent.post('/account/login').expect(200)
    const [one, two] = await Promise.all([
      agent.post('/account/set?delay=100&a=1'),
      agent.post('/account/set?delay=250&b=2'),
    ])
    expect(one.status).toBe(200)
    expect(two.status).toBe(409)
    expect(two.headers['content-type']).toMatch(/problem\+json/)
    const me = await agent.get('/account/me').expect(200)
    expect(me.body.a).toBe('1')
    expect(me.body.b).toBeUndefined()
    off()
    expect(conflicts.length).toBe(1)
  })

  it('a revoked session is not brought back by a request that was still running', async () => {
    const agent = request.agent(sessionApp(kit))
    const { body } = await agent.post('/account/login?user=late').expect(200)
    const slow = agent.post('/account/set?delay=200&x=1').then((r) => r) // .then sends it now
    await sleep(100)
    await kit.sessions.destroy(body.id)
    await slow
    expect(await kit.redis.exists(keyOf(body.id))).toBe(0)
    expect(await kit.sessions.listForUser('late')).toEqual([])
  })
})

describe('per-user index', () => {
  it('lists all 50 sessions of 50 concurrent logins, then logs out everywhere else', async () => {
    const app = sessionApp(kit)
    const agents = Array.from({ length: 50 }, () => request.agent(app))
    const logins = await Promise.all(agents.map((a) => a.post('/account/login?user=bob').expect(200)))
    const ids = logins.map((r) => r.body.id as string).sort()
    const listed = await agents[0]!.get('/account/sessions').expect(200)
    expect(listed.body.map((s: { id: string }) => s.id).sort()).toEqual(ids)
    expect(listed.body.filter((s: { current: boolean }) => s.current)).toHaveLength(1)
    const revoked = await agents[0]!.post('/account/logout-others').expect(200)
    expect(revoked.body.revoked).toBe(49)
    await agents[0]!.get('/account/me').expect(200)
    const others = await Promise.all(agents.slice(1).map((a) => a.get('/account/me')))
    expect(others.every((r) => r.status === 401)).toBe(true)
    expect((await kit.sessions.listForUser('bob')).map((s) => s.id)).toEqual([logins[0]!.body.id])
  })

  it('moves the index entry when the session changes user and drops it when the user field is cleared', async () => {
    const agent = request.agent(sessionApp(kit))
    const { body } = await agent.post('/account/login?user=carol').expect(200)
    await agent.post('/account/set?userId=erin').expect(200)
    expect(await kit.sessions.listForUser('carol')).toEqual([])
    expect((await kit.sessions.listForUser('erin')).map((s) => s.id)).toEqual([body.id])
    await agent.post('/account/set?userId=').expect(200)
    expect(await kit.sessions.listForUser('erin')).toEqual([])
  })

  it('a save that did not change the user keeps the login another request saved meanwhile indexed', async () => {
    const store = new RedisSessionStore({ kit })
    const cookie = { originalMaxAge: null, expires: null, path: '/', httpOnly: true }
    await callback((cb) => store.set('race-login', { cookie, views: 0 } as never, cb))
    // Two requests load the anonymous session; the first logs in, the second only counts a view.
    const a = (await callback<Record<string, unknown>>((cb) => store.get('race-login', cb as never)))!
    const b = (await callback<Record<string, unknown>>((cb) => store.get('race-login', cb as never)))!
    a.userId = 'mallory'
    await callback((cb) => store.set('race-login', a as never, cb))
    b.views = 1
    await callback((cb) => store.set('race-login', b as never, cb))
    const stored = await kit.redis.hgetall(keyOf('race-login'))
    expect(stored['.userId']).toBe('"mallory"')
    expect(stored['.views']).toBe('1')
    expect(stored['#u']).toBe('mallory')
    expect((await kit.sessions.listForUser('mallory')).map((s) => s.id)).toEqual(['race-login'])
    expect(await kit.sessions.revokeAllForUser('mallory')).toBe(1)
    expect(await kit.redis.exists(keyOf('race-login'))).toBe(0)
  })

  it('a save that did not change the user keeps a concurrent switch to another user, and its index', async () => {
    const store = new RedisSessionStore({ kit })
    const cookie = { originalMaxAge: null, expires: null, path: '/', httpOnly: true }
    await callback((cb) => store.set('race-switch', { cookie, userId: 'u1', views: 0 } as never, cb))
    const a = (await callback<Record<string, unknown>>((cb) => store.get('race-switch', cb as never)))!
    const b = (await callback<Record<string, unknown>>((cb) => store.get('race-switch', cb as never)))!
    a.userId = 'u2'
    await callback((cb) => store.set('race-switch', a as never, cb))
    b.views = 1
    await callback((cb) => store.set('race-switch', b as never, cb))
    const stored = await kit.redis.hgetall(keyOf('race-switch'))
    expect(stored['.userId']).toBe('"u2"')
    expect(stored['#u']).toBe('u2')
    expect(await kit.sessions.listForUser('u1')).toEqual([])
    expect((await kit.sessions.listForUser('u2')).map((s) => s.id)).toEqual(['race-switch'])
    // the entry follows the later expiry of the second save
    const score = Number(await kit.redis.zscore(kit.sessions.repository.indexKey('u2'), 'race-switch'))
    expect(score).toBe(Number(stored['#x']))
    expect(score).toBeGreaterThan(Date.now() + 86_400_000)
    expect(await kit.sessions.revokeAllForUser('u2')).toBe(1)
  })
  it("a touch that moves the index entry after another request switched the user moves that user's entry", async () => {
    const store = new RedisSessionStore({ kit, ttl: '1m' })
    const cookie = { originalMaxAge: null, expires: null, path: '/', httpOnly: true }
    await callback((cb) => store.set('touch-switch', { cookie, userId: 't1' } as never, cb))
    const a = (await callback<Record<string, unknown>>((cb) => store.get('touch-switch', cb as never)))!
    const b = (await callback<Record<string, unknown>>((cb) => store.get('touch-switch', cb as never)))!
    b.userId = 't2'
    await callback((cb) => store.set('touch-switch', b as never, cb))
    // The first request ends unchanged with a longer cookie: its touch outlives the index entry.
    ;(a.cookie as { maxAge: number }).maxAge = 3_600_000
    await callback((cb) => store.touch('touch-switch', a as never, cb))
    const score = Number(await kit.redis.zscore(kit.sessions.repository.indexKey('t2'), 'touch-switch'))
    expect(score).toBeGreaterThan(Date.now() + 7_000_000)
    expect(Number(await kit.redis.hget(keyOf('touch-switch'), '#x'))).toBe(score)
    expect(await kit.redis.zscore(kit.sessions.repository.indexKey('t1'), 'touch-switch')).toBeNull()
  })

  it('a session kept alive by reads alone (get without touch) stays in its index and can be revoked', async () => {
    const store = new RedisSessionStore({ kit, ttl: 800 })
    const cookie = { originalMaxAge: null, expires: null, path: '/', httpOnly: true }
    await callback((cb) => store.set('read-only', { cookie, userId: 'reader' } as never, cb))
    // Reads extend the session by its TTL; past two TTLs after the save its first entry is gone.
    for (let i = 0; i < 11; i++) {
      await sleep(200)
      expect(await callback((cb) => store.get('read-only', cb))).toMatchObject({ userId: 'reader' })
    }
    expect((await kit.sessions.listForUser('reader')).map((s) => s.id)).toEqual(['read-only'])
    expect(await kit.sessions.revokeAllForUser('reader')).toBe(1)
    expect(await callback((cb) => store.get('read-only', cb))).toBeNull()
  })

  it('a read moves the index entry only when the extended session would outlive it', async () => {
    const store = new RedisSessionStore({ kit, ttl: '1h' })
    const cookie = { originalMaxAge: null, expires: null, path: '/', httpOnly: true }
    await callback((cb) => store.set('read-move', { cookie, userId: 'mover' } as never, cb))
    const index = kit.sessions.repository.indexKey('mover')
    const counted = async () => {
      let commands = 0
      const off = kit.on('command', () => commands++)
      await callback((cb) => store.get('read-move', cb))
      off()
      return commands
    }
    expect(await counted()).toBe(1)
    // An entry that would expire within the margin after the extended session: the read moves it.
    const near = Date.now() + 3_600_000 + 1_000
    await kit.redis.hset(keyOf('read-move'), '#x', near)
    await kit.redis.zadd(index, near, 'read-move')
    expect(await counted()).toBe(2)
    const moved = Number(await kit.redis.zscore(index, 'read-move'))
    expect(moved).toBeGreaterThan(Date.now() + 7_000_000)
    expect(Number(await kit.redis.hget(keyOf('read-move'), '#x'))).toBe(moved)
    expect(await counted()).toBe(1)
  })
})

describe('RedisSessionStore methods', () => {
  it('implements get/set/touch/destroy/all/length/ids/clear with SCAN, and deletes sessions already expired', async () => {
    const k = createRedkit({ redis: redis.url, prefix: uniquePrefix('store'), configFile: false, env: {} })
    const store = new RedisSessionStore({ kit: k, ttl: '10s' })
    const cookie = { originalMaxAge: null, expires: null, path: '/', httpOnly: true }
    await callback((cb) => store.set('a', { cookie, n: 1 } as never, cb))
    await callback((cb) => store.set('b', { cookie, n: 2, userId: 'u1' } as never, cb))
    const ttl = await k.redis.pttl(store.repository.sessionKey('a'))
    expect(ttl).toBeGreaterThan(9_000)
    expect(ttl).toBeLessThanOrEqual(10_000)
    expect(await callback((cb) => store.get('a', cb))).toMatchObject({ n: 1 })
    expect(await callback((cb) => store.get('missing', cb))).toBeNull()
    expect(await callback<number>((cb) => store.length(cb))).toBe(2)
    expect((await callback<string[]>((cb) => store.ids(cb)))?.sort()).toEqual(['a', 'b'])
    const all = (await callback<Array<{ id: string; n: number }>>((cb) => store.all(cb as never))) ?? []
    expect(all.map((s) => [s.id, s.n]).sort()).toEqual([
      ['a', 1],
      ['b', 2],
    ])
    await callback((cb) =>
      store.touch('a', { cookie: { ...cookie, expires: new Date(Date.now() + 60_000) } } as never, cb),
    )
    expect(await k.redis.pttl(store.repository.sessionKey('a'))).toBeGreaterThan(50_000)
    // a cookie whose expiry has passed: deleted, not stored
    await callback((cb) =>
      store.set('a', { cookie: { ...cookie, expires: new Date(Date.now() - 1000) } } as never, cb),
    )
    expect(await k.redis.exists(store.repository.sessionKey('a'))).toBe(0)
    // ttl as a function of the session
    const fnStore = new RedisSessionStore({
      kit: k,
      ttl: (s) => ((s as { long?: boolean }).long ? '1h' : '1s'),
    })
    await callback((cb) => fnStore.set('c', { cookie, long: true } as never, cb))
    expect(await k.redis.pttl(fnStore.repository.sessionKey('c'))).toBeGreaterThan(3_000_000)
    await expect(
      callback((cb) =>
        new RedisSessionStore({ kit: k, maxSize: 100 }).set('d', { cookie, x: 'y'.repeat(200) } as never, cb),
      ),
    ).rejects.toBeInstanceOf(SessionTooLargeError)
    await callback((cb) => store.destroy('b', cb))
    expect(await callback((cb) => store.get('b', cb))).toBeNull()
    expect(await k.sessions.listForUser('u1')).toEqual([])
    await callback((cb) => store.clear(cb))
    expect(await callback<number>((cb) => store.length(cb))).toBe(0)
    expect(await k.redis.keys(`${k.prefix}:*`)).toEqual([])
    await k.close()
  })

  it('applies a custom serializer to each field; entries it cannot parse count as no session', async () => {
    const k = createRedkit({
      redis: redis.url,
      prefix: uniquePrefix('serializer'),
      configFile: false,
      env: {},
    })
    const tagged = {
      stringify: (value: unknown) => `v2:${JSON.stringify(value)}`,
      parse: (text: string) => {
        if (!text.startsWith('v2:')) throw new Error('not v2')
        return JSON.parse(text.slice(3))
      },
    }
    const cookie = { originalMaxAge: null, expires: null, path: '/', httpOnly: true }
    const v1 = new RedisSessionStore({ kit: k })
    const v2 = new RedisSessionStore({ kit: k, serializer: tagged })
    await callback((cb) => v2.set('s', { cookie, cart: [1, 2] } as never, cb))
    expect(await k.redis.hget(v2.repository.sessionKey('s'), '.cart')).toBe('v2:[1,2]')
    expect(await callback((cb) => v2.get('s', cb))).toMatchObject({ cart: [1, 2] })
    await callback((cb) => v1.set('old', { cookie, cart: [3] } as never, cb))
    expect(await callback((cb) => v2.get('old', cb))).toBeNull()
    expect(await k.redis.exists(v2.repository.sessionKey('old'))).toBe(0)
    await k.close()
  })

  it('works as a plain express-session store', async () => {
    const express = (await import('express')).default
    const app = express()
    app.use(
      expressSession({
        store: new RedisSessionStore({ kit }),
        secret: SECRET,
        resave: false,
        saveUninitialized: false,
      }),
    )
    app.get('/count', (req, res) => {
      req.session.views = (req.session.views ?? 0) + 1
      res.json({ views: req.session.views })
    })
    const agent = request.agent(app)
    await agent.get('/count').expect(200, { views: 1 })
    await agent.get('/count').expect(200, { views: 2 })
    await agent.get('/count').expect(200, { views: 3 })
  })
})

describe('kit.sessions', () => {
  it('creates sessions with ids of at least 128 random bits, reads, merges, touches and destroys them', async () => {
    const id = await kit.sessions.create('zoe', { device: 'cli', n: 1 }, { ttl: '1m' })
    const [tag, random] = id.split('.') as [string, string]
    expect(tag).toBe(kit.sessions.repository.userTag('zoe'))
    expect(Buffer.from(random, 'base64url').length * 8).toBeGreaterThanOrEqual(128)
    expect(await kit.sessions.create('zoe', {}, { ttl: '1m' })).not.toBe(id)
    const got = await kit.sessions.get(id)
    expect(got).toMatchObject({ id, userId: 'zoe', data: { device: 'cli', n: 1 } })
    expect(got!.expiresAt).toBeGreaterThan(Date.now() + 50_000)
    await Promise.all([kit.sessions.update(id, { a: 1 }), kit.sessions.update(id, { b: 2, n: undefined })])
    expect((await kit.sessions.get(id))!.data).toEqual({ device: 'cli', a: 1, b: 2 })
    expect(await kit.sessions.touch(id, { ttl: '2h' })).toBe(true)
    expect((await kit.sessions.get(id))!.expiresAt).toBeGreaterThan(Date.now() + 7_000_000)
    const listed = await kit.sessions.listForUser('zoe')
    expect(listed.map((s) => s.id)).toContain(id)
    expect(listed.at(-1)!.id).toBe(id) // soonest expiry first: the 2h one is last
    expect(await kit.sessions.destroy(id)).toBe(true)
    expect(await kit.sessions.destroy(id)).toBe(false)
    expect(await kit.sessions.get(id)).toBeNull()
    expect(await kit.sessions.update(id, { a: 2 })).toBe(false)
    expect(await kit.sessions.get(id)).toBeNull()
    expect(await kit.sessions.touch(id)).toBe(false)
  })

  it('repository.write without maxSize writes with no size limit', async () => {
    const repository = kit.sessions.repository
    const id = repository.mintId('nolimit')
    const big = JSON.stringify('x'.repeat(100_000))
    const result = await repository.write(id, {
      set: [['big', big]],
      remove: [],
      ttlMs: 60_000,
      userId: 'nolimit',
      previousUserId: undefined,
      mode: 'new',
      expectedVersion: '',
    })
    expect(result.status).toBe('ok')
    expect((await kit.sessions.get(id))!.data.big).toHaveLength(100_000)
    await kit.sessions.destroy(id)
  })

  it('touch is one round trip that reads no data; it moves the index entry only when the new expiry passes it', async () => {
    const id = await kit.sessions.create('yann', { big: 'x'.repeat(10_000) }, { ttl: '10m' })
    const score = async () => Number(await kit.redis.zscore(kit.sessions.repository.indexKey('yann'), id))
    const ttlOf = (sid: string) => kit.redis.pttl(kit.sessions.repository.sessionKey(sid))
    const counted = async (touch: () => Promise<boolean>) => {
      let commands = 0
      const off = kit.on('command', () => commands++)
      const result = await touch()
      off()
      return { result, commands }
    }
    const before = await score()
    // A shorter or equal TTL stays within the entry's score (expiry + one TTL): one call.
    expect(await counted(() => kit.sessions.touch(id, { ttl: '5m' }))).toEqual({ result: true, commands: 1 })
    expect(await ttlOf(id)).toBeLessThanOrEqual(300_000)
    expect(await ttlOf(id)).toBeGreaterThan(290_000)
    expect(await score()).toBe(before)
    // A longer one would outlive the entry: a second call moves it.
    expect(await counted(() => kit.sessions.touch(id, { ttl: '2h' }))).toEqual({ result: true, commands: 2 })
    expect(await ttlOf(id)).toBeGreaterThan(7_000_000)
    expect(await score()).toBeGreaterThan(Date.now() + 2 * 7_000_000)
    expect((await kit.sessions.listForUser('yann')).map((s) => s.id)).toEqual([id])
    // An empty user id is a user too: its entry moves like any other.
    const blank = await kit.sessions.create('', {}, { ttl: '1m' })
    expect(await counted(() => kit.sessions.touch(blank, { ttl: '1h' }))).toEqual({
      result: true,
      commands: 2,
    })
    expect(Number(await kit.redis.zscore(kit.sessions.repository.indexKey(''), blank))).toBeGreaterThan(
      Date.now() + 7_000_000,
    )
    // A session without a user has no index: one call.
    const anonymous = 'touch-anonymous'
    const cookie = { originalMaxAge: null, expires: null, path: '/', httpOnly: true }
    await callback((cb) => new RedisSessionStore({ kit, ttl: 60 }).set(anonymous, { cookie } as never, cb))
    expect(await counted(() => kit.sessions.touch(anonymous, { ttl: '3h' }))).toEqual({
      result: true,
      commands: 1,
    })
    expect(await ttlOf(anonymous)).toBeGreaterThan(10_000_000)
    await kit.sessions.destroy(id)
    expect(await counted(() => kit.sessions.touch(id))).toEqual({ result: false, commands: 1 })
    expect(await kit.redis.exists(kit.sessions.repository.sessionKey(id))).toBe(0)
  })

  it('never lists expired sessions and revokes all but the kept one', async () => {
    const short = await kit.sessions.create(42, {}, { ttl: 150 })
    const keep = await kit.sessions.create(42, {}, { ttl: '1m' })
    const other = await kit.sessions.create(42, {}, { ttl: '1m' })
    expect((await kit.sessions.listForUser(42)).map((s) => s.id).sort()).toEqual([short, keep, other].sort())
    await sleep(250)
    expect((await kit.sessions.listForUser('42')).map((s) => s.id).sort()).toEqual([keep, other].sort())
    expect(await kit.sessions.revokeAllForUser(42, { except: keep })).toBe(1)
    expect((await kit.sessions.listForUser(42)).map((s) => s.id)).toEqual([keep])
    expect(await kit.sessions.get(other)).toBeNull()
  })

  it('revoking one user never deletes a session a stale index entry points to for another user', async () => {
    const bobs = await kit.sessions.create('bob', { who: 'bob' }, { ttl: '1m' })
    // A stale entry (left by a failed follow-up write, for example) in eve's index names bob's session.
    await kit.redis.zadd(kit.sessions.repository.indexKey('eve'), Date.now() + 60_000, bobs)
    expect(await kit.sessions.revokeAllForUser('eve')).toBe(0)
    expect(await kit.sessions.get(bobs)).toMatchObject({ userId: 'bob', data: { who: 'bob' } })
    expect(await kit.redis.zcard(kit.sessions.repository.indexKey('eve'))).toBe(0)
  })

  it('update refuses a patch that would take the stored session over maxSize, and keeps the session as it was', async () => {
    const id = await kit.sessions.create('grow', { a: 'x'.repeat(30_000) }, { ttl: '1m' })
    expect(await kit.sessions.update(id, { b: 'y'.repeat(20_000) })).toBe(true)
    await expect(kit.sessions.update(id, { c: 'z'.repeat(20_000) })).rejects.toBeInstanceOf(
      SessionTooLargeError,
    )
    expect(Object.keys((await kit.sessions.get(id))!.data).sort()).toEqual(['a', 'b'])
    // replacing a field counts its new size, not both
    expect(await kit.sessions.update(id, { b: 'w'.repeat(30_000) })).toBe(true)
    // two concurrent updates that each fit: one of them is refused
    const id2 = await kit.sessions.create('grow', {}, { ttl: '1m' })
    const results = await Promise.allSettled([
      kit.sessions.update(id2, { a: 'x'.repeat(40_000) }),
      kit.sessions.update(id2, { b: 'y'.repeat(40_000) }),
    ])
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1)
    expect(
      results.filter((r) => r.status === 'rejected' && r.reason instanceof SessionTooLargeError),
    ).toHaveLength(1)
    expect(Object.keys((await kit.sessions.get(id2))!.data)).toHaveLength(1)
    expect(await kit.sessions.update(id2, { small: 1 })).toBe(true)
  })

  it('rejects an oversized session and a bad ttl', async () => {
    await expect(kit.sessions.create('u', { blob: 'x'.repeat(70_000) })).rejects.toBeInstanceOf(
      SessionTooLargeError,
    )
    await expect(kit.sessions.create('u', {}, { ttl: 'later' })).rejects.toBeInstanceOf(ConfigError)
  })
})
