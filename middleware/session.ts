import type { NextFunction, Request, RequestHandler, Response } from 'express'
import expressSession, { type CookieOptions, type SessionData } from 'express-session'
import type { Duration, Redkit, SessionRepository, SessionSerializer } from '../src/index.js'
import {
  ConfigError,
  isConnectionError,
  parseDuration,
  SessionConflictError,
  SessionTooLargeError,
} from '../src/index.js'
import {
  decodeFields,
  encodeFields,
  SessionRepository as Repository,
  resolveSessionsOptions,
} from '../src/session/index.js'
import { endNow } from './end-after.js'
import { sendProblem, sendUnavailable } from './problem.js'

type Callback<T = void> = (error: unknown, value?: T) => void
type AnySession = SessionData & Record<string, unknown>

/** Options of {@link RedisSessionStore}. */
export interface RedisSessionStoreOptions {
  /** The kit whose connection hub the store uses. */
  kit: Redkit
  /**
   * Key namespace after the kit's prefix: sessions live at `<kit prefix>:<prefix>:{id}`. The
   * same namespace as `kit.sessions` (the default) lets `kit.sessions.listForUser()` see them.
   * @default 'session'
   */
  prefix?: string
  /**
   * Lifetime when the session cookie has no expiry (no `maxAge`/`expires`): a duration, or a
   * function of the session returning one. A cookie expiry always wins.
   * @default '1d'
   */
  ttl?: Duration | ((session: SessionData) => Duration)
  /**
   * Do not extend the TTL on requests that leave the session unchanged (`touch` becomes a no-op).
   * @default false
   */
  disableTouch?: boolean
  /**
   * Serializes each top-level session field (the session is stored as a hash, one field each).
   * @default JSON
   */
  serializer?: SessionSerializer
  /**
   * Session field holding the user id: when set (string or number), the session is kept in that
   * user's index (`kit.sessions.listForUser`, `revokeAllForUser`). `false` turns the index off.
   * @default 'userId'
   */
  userField?: string | false
  /**
   * Largest serialized session in bytes (field names and values); a save that would leave a
   * larger session, merged with what other requests stored meanwhile, fails with
   * `SessionTooLargeError` and writes nothing.
   * @default 65536
   */
  maxSize?: number
  /**
   * What a save does when another request changed the session after this one loaded it:
   * `'merge'` writes only the fields this request changed (both changes persist; a field changed
   * by both keeps the last write), `'reject'` refuses the save with `SessionConflictError`.
   * Both emit `session:conflict`.
   * @default 'merge'
   */
  onConflict?: 'merge' | 'reject'
  /**
   * SCAN COUNT hint for `all`, `length`, `ids` and `clear`.
   * @default 100
   */
  scanCount?: number
}

const STORE_DEFAULTS = {
  prefix: 'session',
  ttl: '1d' as RedisSessionStoreOptions['ttl'],
  disableTouch: false,
  serializer: JSON as SessionSerializer,
  userField: 'userId' as string | false,
  maxSize: 65_536,
  onConflict: 'merge' as 'merge' | 'reject',
  scanCount: 100,
}

interface ResolvedStoreOptions {
  ttl: number | ((session: SessionData) => Duration)
  disableTouch: boolean
  serializer: SessionSerializer
  userField: string | false
  maxSize: number
  onConflict: 'merge' | 'reject'
  scanCount: number
  namespace: string
}

function resolveStoreOptions(options: Omit<RedisSessionStoreOptions, 'kit'>): ResolvedStoreOptions {
  const merged = {
    ...STORE_DEFAULTS,
    ...Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)),
  } as typeof STORE_DEFAULTS
  const shared = resolveSessionsOptions(
    {
      namespace: merged.prefix,
      maxSize: merged.maxSize,
      serializer: merged.serializer,
      ttl: typeof merged.ttl === 'function' ? undefined : merged.ttl,
    },
    'session',
  )
  if (typeof merged.disableTouch !== 'boolean') {
    throw new ConfigError('session.disableTouch', 'must be a boolean', 'write true or false')
  }
  if (merged.userField !== false && (typeof merged.userField !== 'string' || merged.userField === '')) {
    throw new ConfigError('session.userField', 'must be a field name or false', "write 'userId'")
  }
  if (merged.userField === 'cookie') {
    throw new ConfigError('session.userField', "cannot be 'cookie'", "write 'userId'")
  }
  if (merged.onConflict !== 'merge' && merged.onConflict !== 'reject') {
    throw new ConfigError('session.onConflict', `must be 'merge' or 'reject'`, "write 'merge'")
  }
  if (!Number.isInteger(merged.scanCount) || merged.scanCount <= 0) {
    throw new ConfigError('session.scanCount', 'must be a positive whole number', 'write 100')
  }
  return {
    ttl: typeof merged.ttl === 'function' ? merged.ttl : shared.ttlMs,
    disableTouch: merged.disableTouch,
    serializer: shared.serializer,
    userField: merged.userField,
    maxSize: shared.maxSize,
    onConflict: merged.onConflict,
    scanCount: merged.scanCount,
    namespace: shared.namespace,
  }
}

/** What a request loaded (or last saved): the base of the field-level diff on save. */
interface Snapshot {
  fields: Map<string, string>
  version: string
  userId: string | undefined
  /** Score of the index entry as last read or written (see SessionRepository.touch). */
  indexScore: number
  /** TTL the read already extended the session by (0: none), so the end-of-request touch can skip. */
  extendedMs: number
  /** Saved during this request: a second save without changes, or a touch, has nothing to do. */
  saved: boolean
}

/**
 * Where a session object keeps its snapshot: a symbol key, which express-session's copy (for...in),
 * its change detection (JSON.stringify) and the serializer all ignore.
 */
const SNAPSHOT = Symbol('redkit.session.snapshot')
/** A touch within this of the TTL the read applied has nothing left to do. */
const TOUCH_TOLERANCE_MS = 1000
type Snapshotted = { [SNAPSHOT]?: Snapshot }

function userOf(session: Record<string, unknown>, field: string | false): string | undefined {
  if (field === false) return undefined
  const value = session[field]
  return typeof value === 'string' || typeof value === 'number' ? String(value) : undefined
}

function settle<T>(promise: Promise<T>, callback: Callback<T> | undefined): void {
  promise.then(
    (value) => callback?.(null, value),
    (error: unknown) => callback?.(error),
  )
}

const ExpressStore = expressSession.Store

/** Set on a request by session(): how to answer when Redis fails inside a session method. */
const ON_UNAVAILABLE = Symbol('redkit.session.onUnavailable')
type Guardable = Request & { [ON_UNAVAILABLE]?: (req: Request, error: unknown) => void }
type Done = (error?: unknown) => void
/** express-session's Session as it is at runtime (its typings mark the constructor private). */
interface SessionInstance {
  readonly req: Request
  cookie: SessionData['cookie']
  regenerate(callback: Done): unknown
  destroy(callback?: Done): unknown
  reload(callback: Done): unknown
  save(callback?: Done): unknown
}
type SessionConstructor = new (req: Request, data?: object) => SessionInstance
const CookieConstructor = expressSession.Cookie as unknown as new (options?: object) => SessionData['cookie']

function guard(req: Guardable, callback: Done | undefined): Done | undefined {
  const onUnavailable = req[ON_UNAVAILABLE]
  if (!onUnavailable) return callback
  return (error?: unknown) => {
    if (error && isConnectionError(error) && req.res && !req.res.headersSent) onUnavailable(req, error)
    else callback?.(error)
  }
}

/**
 * express-session's Session whose regenerate/destroy/reload/save, under session(), answer 503
 * themselves when Redis fails mid-request (instead of handing the app a connection error that
 * would become a 500). Prototype methods, so the session object itself carries nothing extra.
 */
class GuardedSession extends (expressSession.Session as unknown as SessionConstructor) {
  override regenerate(callback: Done): unknown {
    return super.regenerate(guard(this.req, callback) as Done)
  }
  override destroy(callback?: Done): unknown {
    return super.destroy(guard(this.req, callback))
  }
  override reload(callback: Done): unknown {
    return super.reload(guard(this.req, callback) as Done)
  }
  override save(callback?: Done): unknown {
    return super.save(guard(this.req, callback))
  }
}

/**
 * A complete express-session store on the kit's shared connection (standalone, Sentinel or
 * Cluster). Each session is a Redis hash with one field per top-level session field, so a save
 * writes only what the request changed (no lost updates between concurrent requests); the
 * session's user, when it has one, is kept in a per-user index in the same Lua script. When Redis
 * is unreachable every method fails within the command timeout with `ConnectionError` (never
 * hangs); the store never emits `disconnect`, which would make express-session skip sessions
 * silently.
 *
 * @example
 * app.use(expressSession({ store: new RedisSessionStore({ kit }), secret, resave: false, saveUninitialized: false }))
 */
export class RedisSessionStore extends ExpressStore {
  readonly kit: Redkit
  readonly repository: SessionRepository
  readonly #options: ResolvedStoreOptions

  constructor(options: RedisSessionStoreOptions) {
    super()
    if (!options || typeof options.kit !== 'object' || options.kit === null) {
      throw new ConfigError('session.kit', 'is required', 'pass { kit } (from createRedkit())')
    }
    const { kit, ...rest } = options
    this.kit = kit
    this.#options = resolveStoreOptions(rest)
    this.repository = new Repository(kit, this.#options.namespace)
  }

  /** The resolved `userField` option. */
  get userField(): string | false {
    return this.#options.userField
  }

  #ttlMs(session: AnySession): number {
    const cookie = session.cookie as { expires?: Date | string | null; maxAge?: number | null } | undefined
    if (cookie?.expires) return new Date(cookie.expires).getTime() - Date.now()
    if (typeof cookie?.maxAge === 'number') return cookie.maxAge
    const ttl = this.#options.ttl
    if (typeof ttl === 'number') return ttl
    const value = ttl(session)
    return typeof value === 'number' && value <= 0 ? 0 : parseDuration(value, 'session.ttl')
  }

  /**
   * TTL a later read extends the session by: what express-session's touch would apply for this
   * cookie (its maxAge, else the ttl option); 0 when it cannot be known in advance.
   */
  #accessTtlMs(session: AnySession): number {
    const cookie = session.cookie as { originalMaxAge?: number | null; expires?: unknown } | undefined
    if (typeof cookie?.originalMaxAge === 'number') return Math.max(0, cookie.originalMaxAge)
    if (cookie?.expires) return 0
    const ttl = this.#options.ttl
    if (typeof ttl === 'number') return ttl
    const value = ttl(session)
    return typeof value === 'number' && value <= 0 ? 0 : parseDuration(value, 'session.ttl')
  }

  #emitInvalid(reason: string): void {
    if (this.kit.events.has('session:invalid')) this.kit.events.emit('session:invalid', { reason })
  }

  override get(sid: string, callback: Callback<SessionData | null>): void {
    settle(this.#get(sid), callback)
  }

  async #get(sid: string): Promise<SessionData | null> {
    let raw: Awaited<ReturnType<SessionRepository['read']>>
    try {
      raw = await this.repository.read(sid, !this.#options.disableTouch)
    } catch (error) {
      if (!(error instanceof Error) || !error.message.startsWith('WRONGTYPE')) throw error
      await this.repository.remove(sid)
      this.#emitInvalid('wrong type')
      return null
    }
    if (!raw) return null
    let data: Record<string, unknown>
    try {
      data = decodeFields(raw, this.#options.serializer)
      const cookie = data.cookie
      if (cookie !== undefined && (typeof cookie !== 'object' || cookie === null))
        throw new Error('bad cookie')
    } catch {
      // A stored entry that no longer parses (serializer changed, manual edit): no session, not a crash.
      await this.repository.remove(sid)
      this.#emitInvalid('unparseable')
      return null
    }
    // Sessions created by kit.sessions have no cookie; express-session needs one.
    data.cookie ??= { originalMaxAge: null, expires: null, httpOnly: true, path: '/' }
    const fields = raw.fields
    fields.delete('cookie')
    ;(data as Snapshotted)[SNAPSHOT] = {
      fields,
      version: raw.version,
      userId: raw.userId,
      indexScore: raw.indexScore,
      extendedMs: this.#options.disableTouch ? 0 : raw.accessTtlMs,
      saved: false,
    }
    return data as unknown as SessionData
  }

  override createSession(req: Request, session: SessionData) {
    // As express-session's, but the session is a GuardedSession (see session()).
    const cookie = session.cookie as unknown as { expires?: unknown; originalMaxAge?: number | null }
    const expires = cookie.expires
    const originalMaxAge = cookie.originalMaxAge
    session.cookie = new CookieConstructor(cookie)
    if (typeof expires === 'string') session.cookie.expires = new Date(expires)
    ;(session.cookie as { originalMaxAge?: number | null }).originalMaxAge = originalMaxAge
    const created = new GuardedSession(req, session)
    req.session = created as unknown as typeof req.session
    const snapshot = (session as Snapshotted)[SNAPSHOT]
    if (snapshot) (created as Snapshotted)[SNAPSHOT] = snapshot
    return created as unknown as typeof req.session
  }

  override set(sid: string, session: SessionData, callback?: (error?: unknown) => void): void {
    settle(this.#set(sid, session as AnySession), callback)
  }

  async #set(sid: string, session: AnySession): Promise<void> {
    const ttlMs = this.#ttlMs(session)
    // A session whose cookie already expired is deleted, never stored.
    if (ttlMs <= 0) {
      await this.repository.remove(sid)
      return
    }
    const { serializer, maxSize, userField } = this.#options
    const { fields, bytes } = encodeFields(session, serializer, maxSize, 'cookie')
    const cookie = serializer.stringify(session.cookie)
    // Counted as every field is (name and value), as the write script counts the merged session.
    const total = bytes + Buffer.byteLength('cookie') + Buffer.byteLength(cookie)
    if (total > maxSize) throw new SessionTooLargeError(total, maxSize)
    const userId = userOf(session, userField)
    const snapshot = (session as Snapshotted)[SNAPSHOT]
    const set: Array<[string, string]> = []
    const remove: string[] = []
    if (snapshot) {
      for (const [name, text] of fields) if (snapshot.fields.get(name) !== text) set.push([name, text])
      for (const name of snapshot.fields.keys()) if (!fields.has(name)) remove.push(name)
      if (snapshot.saved && set.length === 0 && remove.length === 0 && snapshot.userId === userId) return
    } else {
      set.push(...fields)
    }
    set.push(['cookie', cookie])
    const strict = this.#options.onConflict === 'reject'
    const result = await this.repository.write(sid, {
      set,
      remove,
      ttlMs,
      accessTtlMs: this.#accessTtlMs(session),
      // Only a change of the user is sent: the data fields merge, so a request that loaded the
      // session before another one logged in, out or switched user keeps that change, and the
      // index must keep following it (or revokeAllForUser would miss a logged-in session).
      userId: userField === false || (snapshot && userId === snapshot.userId) ? undefined : (userId ?? null),
      previousUserId: snapshot?.userId,
      mode: snapshot ? (strict ? 'strict' : 'patch') : 'new',
      expectedVersion: snapshot?.version ?? '',
      maxSize,
    })
    if (result.conflicted && this.kit.events.has('session:conflict'))
      this.kit.events.emit('session:conflict', {})
    if (result.status === 'conflict') throw new SessionConflictError(snapshot?.version ?? '', result.version)
    // 'gone': destroyed meanwhile (logout elsewhere, revoke): the late write is dropped on purpose.
    if (result.status !== 'ok') return
    ;(session as Snapshotted)[SNAPSHOT] = {
      fields,
      version: result.version,
      userId,
      indexScore: result.indexScore,
      extendedMs: 0,
      saved: true,
    }
  }

  /**
   * Like express-session's, without the DELETE for a session that was never stored (a visitor
   * without a session cookie logging in): one round trip less, and no Redis needed for it.
   */
  override regenerate(req: Request, callback: (error?: unknown) => void): void {
    if (req.session && !(req.session as Snapshotted)[SNAPSHOT]) {
      // express-session installs generate() on the store when it mounts it.
      ;(this as unknown as { generate(req: Request): void }).generate(req)
      callback()
      return
    }
    super.regenerate(req, callback)
  }

  override touch(sid: string, session: SessionData, callback?: (error?: unknown) => void): void {
    settle(this.#touch(sid, session as AnySession), callback)
  }

  async #touch(sid: string, session: AnySession): Promise<void> {
    const snapshot = (session as Snapshotted)[SNAPSHOT]
    if (this.#options.disableTouch || snapshot?.saved) return
    const ttlMs = this.#ttlMs(session)
    if (ttlMs <= 0) {
      await this.repository.remove(sid)
      return
    }
    const userId = userOf(session, this.#options.userField)
    const indexScore = snapshot && userId === snapshot.userId ? snapshot.indexScore : 0
    // The read already extended the session by this TTL, and the index entry still covers it.
    if (
      snapshot &&
      snapshot.extendedMs > 0 &&
      Math.abs(ttlMs - snapshot.extendedMs) <= TOUCH_TOLERANCE_MS &&
      (userId === undefined || this.repository.indexCovers(ttlMs, indexScore))
    ) {
      return
    }
    await this.repository.touch(sid, ttlMs, userId, indexScore)
  }

  override destroy(sid: string, callback?: (error?: unknown) => void): void {
    settle(
      this.repository.remove(sid).then(() => undefined),
      callback,
    )
  }

  /** Every stored session (an array; each has its `id`), listed with SCAN on every master. */
  override all(callback: (error: unknown, sessions?: SessionData[] | null) => void): void {
    settle(this.#all(), callback)
  }

  async #all(): Promise<SessionData[]> {
    const ids = await this.repository.scanIds(this.#options.scanCount)
    const raws = await Promise.all(ids.map((id) => this.repository.read(id).catch(() => null)))
    const sessions: SessionData[] = []
    raws.forEach((raw, i) => {
      if (!raw) return
      try {
        const data = decodeFields(raw, this.#options.serializer)
        data.id = ids[i]
        sessions.push(data as unknown as SessionData)
      } catch {
        // skipped here; removed when next read by id
        this.#emitInvalid('unparseable')
      }
    })
    return sessions
  }

  /** Number of stored sessions. */
  override length(callback: (error: unknown, length?: number) => void): void {
    settle(
      this.repository.scanIds(this.#options.scanCount).then((ids) => ids.length),
      callback,
    )
  }

  /** Ids of every stored session. */
  ids(callback: (error: unknown, ids?: string[]) => void): void {
    settle(this.repository.scanIds(this.#options.scanCount), callback)
  }

  /** Deletes every session of this namespace and every user index. */
  override clear(callback?: (error?: unknown) => void): void {
    settle(this.repository.clear(this.#options.scanCount), callback)
  }

  /**
   * True when saving `session` now would write something: a field differs from what was loaded
   * or last saved, or a new session has data (or `saveUninitialized`).
   */
  hasUnsavedChanges(session: SessionData, saveUninitialized = false): boolean {
    const data = session as AnySession
    const snapshot = (session as Snapshotted)[SNAPSHOT]
    if (!snapshot) {
      if (saveUninitialized) return true
      for (const name of Object.keys(data)) if (name !== 'cookie' && data[name] !== undefined) return true
      return false
    }
    if (userOf(data, this.#options.userField) !== snapshot.userId) return true
    let count = 0
    for (const name of Object.keys(data)) {
      if (name === 'cookie') continue
      const value = data[name]
      if (value === undefined || typeof value === 'function') continue
      count++
      if (snapshot.fields.get(name) !== this.#options.serializer.stringify(value)) return true
    }
    return count !== snapshot.fields.size
  }
}

/** Options of {@link session}: express-session's, with safe defaults, plus the store's. */
export interface SessionOptions extends Omit<RedisSessionStoreOptions, 'kit'> {
  /**
   * Secret(s) signing the session cookie, each at least 32 characters. With a list, the first
   * signs and every one verifies (rotation: put the new secret first, drop the old one later).
   */
  secret: string | string[]
  /**
   * Cookie name.
   * @default 'sid'
   */
  name?: string
  /**
   * Cookie options over the safe defaults `{ httpOnly: true, sameSite: 'lax', secure: 'auto', path: '/' }`
   * (`secure: 'auto'`: Secure when the request is HTTPS as Express's `trust proxy` reports it).
   * @default { httpOnly: true, sameSite: 'lax', secure: 'auto', path: '/' }
   */
  cookie?: CookieOptions
  /**
   * Send the cookie (with a fresh expiry) on every response.
   * @default false
   */
  rolling?: boolean
  /**
   * Save unchanged sessions on every request (unneeded: touch extends them).
   * @default false
   */
  resave?: boolean
  /**
   * Store sessions that hold nothing yet (no cookie is sent until the session has data).
   * @default false
   */
  saveUninitialized?: boolean
  /**
   * Trust the reverse proxy for `secure: 'auto'` (`undefined` follows Express's `trust proxy`).
   * @default undefined
   */
  proxy?: boolean
  /**
   * What `delete req.session` / `req.session = null` does at the end of the request.
   * @default 'keep'
   */
  unset?: 'destroy' | 'keep'
  /**
   * Session id generator.
   * @default express-session's (24 random bytes from the CSPRNG)
   */
  genid?: (req: Request) => string
  /**
   * A store to use instead of creating one (the store options above are then ignored).
   * @default a new RedisSessionStore on this kit
   */
  store?: RedisSessionStore
}

const MIN_SECRET_LENGTH = 32

function resolveSecrets(secret: unknown): string[] {
  const list = Array.isArray(secret) ? secret : [secret]
  if (secret === undefined || secret === null || secret === '' || list.length === 0) {
    throw new ConfigError(
      'session.secret',
      'is missing',
      `pass a random string of at least ${MIN_SECRET_LENGTH} characters, e.g. secret: process.env.SESSION_SECRET`,
    )
  }
  list.forEach((item, i) => {
    const field = Array.isArray(secret) ? `session.secret[${i}]` : 'session.secret'
    if (typeof item !== 'string' || item.length < MIN_SECRET_LENGTH) {
      throw new ConfigError(
        field,
        `must be a string of at least ${MIN_SECRET_LENGTH} characters (got ${typeof item === 'string' ? `${item.length}` : typeof item})`,
        "generate one with `node -e \"console.log(require('node:crypto').randomBytes(32).toString('base64url'))\"`",
      )
    }
  })
  return list as string[]
}

/**
 * express-session with a {@link RedisSessionStore} on the kit and safe defaults (`httpOnly`,
 * `sameSite: 'lax'`, Secure on HTTPS, `resave` and `saveUninitialized` off). Refuses a missing or
 * short secret at creation. When Redis is unreachable, a request that needs its session (it
 * sends a session cookie, or changes its session) gets a 503 problem+json within the command
 * timeout; mount it only on the routes that use sessions so the others never depend on Redis.
 *
 * @example
 * app.use('/account', session(kit, { secret: process.env.SESSION_SECRET! }))
 */
export function session(kit: Redkit, options: SessionOptions): RequestHandler {
  if (!options || typeof options !== 'object') {
    throw new ConfigError('session', 'options are required', 'pass { secret: process.env.SESSION_SECRET }')
  }
  const secrets = resolveSecrets(options.secret)
  const {
    secret: _secret,
    name = 'sid',
    cookie,
    rolling = false,
    resave = false,
    saveUninitialized = false,
    proxy,
    unset,
    genid,
    store: givenStore,
    ...storeOptions
  } = options
  const store = givenStore ?? new RedisSessionStore({ kit, ...storeOptions })
  const inner = expressSession({
    store,
    secret: secrets,
    name,
    cookie: { httpOnly: true, sameSite: 'lax', secure: 'auto', path: '/', ...cookie },
    rolling,
    resave,
    saveUninitialized,
    ...(proxy === undefined ? {} : { proxy }),
    ...(unset === undefined ? {} : { unset }),
    ...(genid === undefined ? {} : { genid }),
  })

  function fail(res: Response, next: NextFunction, error: unknown): void {
    if (isConnectionError(error)) {
      if (kit.events.has('session:unavailable')) kit.events.emit('session:unavailable', {})
      sendUnavailable(
        res,
        'Session store unavailable',
        'Sessions cannot be read or saved right now; try again in a moment.',
      )
      return
    }
    if (error instanceof SessionTooLargeError) {
      sendProblem(res, { status: 500, title: 'Session too large', detail: error.message })
      return
    }
    if (error instanceof SessionConflictError) {
      sendProblem(res, {
        status: 409,
        title: 'Session changed concurrently',
        detail: 'Another request changed this session; retry the request.',
      })
      return
    }
    next(error)
  }

  // Saves a changed session before the response is committed, so a failed save (Redis down, too
  // large, conflict) becomes a clear error response instead of a 200 for state that was not kept:
  // express-session itself sends the response first and reports a failed save afterwards.
  // Headers already sent (res.write, a piped file, writeHead or flushHeaders before end) cannot be
  // taken back, and they cannot wait for the save either: writeHead is synchronous, and deferring
  // it would make headersSent, flushHeaders and write backpressure lie to the handler. Those
  // responses keep express-session's save at the end; the README says how to save before them.
  function saveBeforeEnd(req: Request, res: Response, next: NextFunction): void {
    const end = res.end
    res.end = function sessionSaveEnd(this: Response, ...args: unknown[]) {
      res.end = end
      const current = req.session
      if (!current || res.headersSent || !store.hasUnsavedChanges(current, saveUninitialized)) {
        return (end as (...a: unknown[]) => Response).apply(this, args)
      }
      current.touch()
      current.save((error?: unknown) => {
        if (!error) {
          endNow(kit, res, end, args, 'session')
          return
        }
        // Without a session, express-session neither sets a cookie nor saves at the end.
        ;(req as { session?: unknown }).session = undefined
        res.removeHeader('Content-Length')
        res.removeHeader('ETag')
        fail(res, next, error)
      })
      return this
    } as Response['end']
  }

  // Answers 503 when Redis fails inside a session method (see GuardedSession). Without a session,
  // express-session neither sets a cookie nor saves at the end.
  function onUnavailable(req: Request, error: unknown): void {
    ;(req as { session?: unknown }).session = undefined
    if (req.res) fail(req.res, () => undefined, error)
  }

  // New sessions are made by express-session's generate(): make them GuardedSessions too.
  const generate = (store as unknown as { generate(req: Request): void }).generate
  ;(store as unknown as { generate(req: Request): void }).generate = function generateGuarded(req) {
    generate.call(store, req)
    const plain = req.session
    const guarded = new GuardedSession(req, undefined)
    guarded.cookie = plain.cookie
    req.session = guarded as unknown as typeof req.session
  }

  return function sessionMiddleware(req, res, next) {
    if (req.session) {
      next()
      return
    }
    ;(req as Guardable)[ON_UNAVAILABLE] = onUnavailable
    let ready = false
    inner(req, res, (error?: unknown) => {
      if (ready) {
        // express-session reports a failed save or touch after the response was sent.
        if (error && isConnectionError(error) && kit.events.has('session:unavailable')) {
          kit.events.emit('session:unavailable', {})
        }
        if (error && !isConnectionError(error))
          kit.events.emit('error', { error: error as Error, connection: 'session' })
        return
      }
      ready = true
      if (error) {
        fail(res, next, error)
        return
      }
      if (req.session) {
        saveBeforeEnd(req, res, next)
      }
      next()
    })
  }
}
