import express from 'express'
import { type SessionOptions, session } from '../../middleware/session.js'
import type { Redkit } from '../../src/index.js'

declare module 'express-session' {
  interface SessionData {
    userId?: string
    views?: number
    [field: string]: unknown
  }
}

export const SECRET = 'test-secret-0123456789-abcdefghijklmnop'

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/**
 * A small app exercising the session middleware: login (regenerate), me, set fields (optionally
 * slowly, to overlap requests), logout, my sessions, log out everywhere else, and a public route
 * that does not use sessions.
 */
export function sessionApp(kit: Redkit, options: Partial<SessionOptions> = {}) {
  const app = express()
  app.set('trust proxy', 'loopback')
  app.get('/public', (_req, res) => {
    res.json({ ok: true })
  })
  const account = express.Router()
  account.use(session(kit, { secret: SECRET, cookie: { maxAge: 60_000 }, ...options }))
  account.post('/login', async (req, res, next) => {
    const user = String(req.query.user ?? 'alice')
    const delay = Number(req.query.delay ?? 0)
    if (delay) await sleep(delay)
    req.session.regenerate((error) => {
      if (error) return next(error)
      req.session.userId = user
      req.session.loginAt = new Date().toISOString()
      res.json({ id: req.sessionID })
    })
  })
  account.get('/me', (req, res) => {
    if (!req.session.userId) {
      res.status(401).json({ loggedIn: false })
      return
    }
    const { cookie: _cookie, ...data } = req.session
    res.json({ ...data, id: req.sessionID })
  })
  account.post('/set', async (req, res) => {
    const delay = Number(req.query.delay ?? 0)
    if (delay) await sleep(delay)
    for (const [field, value] of Object.entries(req.query)) {
      if (field === 'delay') continue
      req.session[field] = value === '' ? undefined : value
    }
    if (delay) await sleep(delay)
    res.json({ ok: true })
  })
  account.post('/remember', (req, res) => {
    req.session.cookie.maxAge = Number(req.query.ms ?? 120_000)
    res.json({ ok: true })
  })
  account.post('/big', (req, res) => {
    req.session.blob = 'x'.repeat(Number(req.query.bytes ?? 100_000))
    res.json({ ok: true })
  })
  account.post('/logout', (req, res, next) => {
    req.session.destroy((error) => (error ? next(error) : res.json({ ok: true })))
  })
  account.get('/sessions', async (req, res) => {
    const userId = req.session.userId
    if (!userId) {
      res.status(401).end()
      return
    }
    const list = await kit.sessions.listForUser(userId)
    res.json(list.map((s) => ({ id: s.id, current: s.id === req.sessionID })))
  })
  account.post('/logout-others', async (req, res) => {
    const userId = req.session.userId
    if (!userId) {
      res.status(401).end()
      return
    }
    res.json({ revoked: await kit.sessions.revokeAllForUser(userId, { except: req.sessionID }) })
  })
  app.use('/account', account)
  return app
}

/** The session id inside a signed `sid` cookie of a supertest response. */
export function cookieOf(setCookie: string[] | string | undefined, name = 'sid'): string | undefined {
  const list = Array.isArray(setCookie) ? setCookie : setCookie ? [setCookie] : []
  const found = list.find((c) => c.startsWith(`${name}=`))
  return found?.split(';')[0]
}
