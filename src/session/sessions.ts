import { ConfigError, SessionTooLargeError } from '../errors.js'
import type { Redkit } from '../kit.js'
import { type Duration, parseDuration } from '../util/duration.js'
import { type RawSession, SessionRepository, type SessionSerializer } from './repository.js'

declare module '../events.js' {
  interface RedkitEventMap {
    /** A session could not be read or written because Redis is unreachable (the request got a 503). */
    'session:unavailable': {}
    /** Another request changed the session after this one loaded it (merged, or refused in 'reject' mode). */
    'session:conflict': {}
    /** A stored session no longer parsed; it was deleted and treated as absent. */
    'session:invalid': { reason: string }
  }
}

/** Options of {@link Sessions} (`kit.sessions` uses the defaults). */
export interface SessionsOptions {
  /**
   * Key namespace after the kit prefix; the express-session store uses the same one by default, so
   * `listForUser` sees sessions created by either.
   * @default 'session'
   */
  namespace?: string
  /**
   * Lifetime of a session created without its own `ttl`.
   * @default '1d'
   */
  ttl?: Duration
  /**
   * Largest serialized session in bytes (field names and values), as a write would leave it
   * merged into what is stored; larger writes throw `SessionTooLargeError` and write nothing.
   * @default 65536
   */
  maxSize?: number
  /**
   * Serializes each top-level field.
   * @default JSON
   */
  serializer?: SessionSerializer
}

interface ResolvedSessionsOptions {
  namespace: string
  ttlMs: number
  maxSize: number
  serializer: SessionSerializer
}

export const SESSIONS_DEFAULTS = {
  namespace: 'session',
  ttl: '1d',
  maxSize: 65_536,
  serializer: JSON as SessionSerializer,
} satisfies Required<SessionsOptions>

/** Checks the options shared by `kit.sessions` and the store. */
export function resolveSessionsOptions(
  options: SessionsOptions,
  field = 'sessions',
): ResolvedSessionsOptions {
  const merged = {
    ...SESSIONS_DEFAULTS,
    ...Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)),
  } as Required<SessionsOptions>
  if (typeof merged.namespace !== 'string' || !/^[A-Za-z0-9_.-]+$/.test(merged.namespace)) {
    throw new ConfigError(
      `${field}.namespace`,
      `must be letters, digits, '_', '.' or '-', got ${JSON.stringify(merged.namespace)}`,
      "write 'session'",
    )
  }
  const ttlMs = parseDuration(merged.ttl, `${field}.ttl`)
  if (ttlMs <= 0) throw new ConfigError(`${field}.ttl`, 'must be positive', "write '1d'")
  if (!Number.isInteger(merged.maxSize) || merged.maxSize <= 0) {
    throw new ConfigError(
      `${field}.maxSize`,
      `must be a positive whole number of bytes, got ${String(merged.maxSize)}`,
      'write 65536',
    )
  }
  const serializer = merged.serializer
  if (!serializer || typeof serializer.parse !== 'function' || typeof serializer.stringify !== 'function') {
    throw new ConfigError(
      `${field}.serializer`,
      'must have parse() and stringify()',
      'pass JSON or { parse, stringify }',
    )
  }
  return { namespace: merged.namespace, ttlMs, maxSize: merged.maxSize, serializer }
}

/** A session as returned by {@link Sessions}. */
export interface SessionRecord<T extends Record<string, unknown> = Record<string, unknown>> {
  id: string
  /** The user the session is indexed under (absent for anonymous express sessions). */
  userId: string | undefined
  /** Top-level fields (for express sessions this includes `cookie`). */
  data: T
  /** Expiry in ms since the epoch. */
  expiresAt: number
}

/** A user id: strings and numbers are stored as strings. */
export type UserId = string | number

/** Serializes `data`'s fields, checking the size limit. Undefined values and functions are skipped. */
export function encodeFields(
  data: Record<string, unknown>,
  serializer: SessionSerializer,
  maxSize: number,
  skip?: string,
): { fields: Map<string, string>; bytes: number } {
  const fields = new Map<string, string>()
  let bytes = 0
  for (const name of Object.keys(data)) {
    if (name === skip) continue
    const value = data[name]
    if (value === undefined || typeof value === 'function') continue
    const text = serializer.stringify(value)
    if (typeof text !== 'string') continue
    fields.set(name, text)
    bytes += Buffer.byteLength(name) + Buffer.byteLength(text)
  }
  if (bytes > maxSize) throw new SessionTooLargeError(bytes, maxSize)
  return { fields, bytes }
}

/** Parses every data field; throws when one does not parse. */
export function decodeFields(raw: RawSession, serializer: SessionSerializer): Record<string, unknown> {
  const data: Record<string, unknown> = {}
  for (const [name, text] of raw.fields) data[name] = serializer.parse(text)
  return data
}

/**
 * Programmatic sessions (`kit.sessions`): create, read, merge, extend and revoke sessions, and
 * list or revoke every session of one user. Each user has an index (a sorted set scored by
 * expiry) updated in the same Lua script as the session itself and pruned on every read and
 * write, so it never lists an expired session.
 *
 * @example
 * const id = await kit.sessions.create(user.id, { device: 'cli' }, { ttl: '30d' })
 * await kit.sessions.update(id, { lastSeen: Date.now() })
 * await kit.sessions.revokeAllForUser(user.id, { except: id }) // "log out everywhere else"
 */
export class Sessions {
  readonly #options: ResolvedSessionsOptions
  /** Storage shared with the express-session store of the same namespace. */
  readonly repository: SessionRepository

  constructor(kit: Redkit, options: SessionsOptions = {}) {
    this.#options = resolveSessionsOptions(options)
    this.repository = new SessionRepository(kit, this.#options.namespace)
  }

  #ttl(ttl: Duration | undefined): number {
    const ms = ttl === undefined ? this.#options.ttlMs : parseDuration(ttl, 'ttl')
    if (ms <= 0) throw new ConfigError('ttl', 'must be positive', "write '1d'")
    return ms
  }

  /**
   * Creates a session for `userId` and returns its id: 144 random bits from the CSPRNG, prefixed
   * with the user's hash tag so that the session and the user's index share a Cluster slot.
   */
  async create(
    userId: UserId,
    data: Record<string, unknown> = {},
    options: { ttl?: Duration } = {},
  ): Promise<string> {
    const user = String(userId)
    const ttlMs = this.#ttl(options.ttl)
    const { fields } = encodeFields(data, this.#options.serializer, this.#options.maxSize)
    const id = this.repository.mintId(user)
    await this.repository.write(id, {
      set: [...fields],
      remove: [],
      ttlMs,
      userId: user,
      previousUserId: undefined,
      mode: 'new',
      expectedVersion: '',
      maxSize: this.#options.maxSize,
    })
    return id
  }

  /** The session, or null when it does not exist (expired, destroyed, or never created). */
  async get<T extends Record<string, unknown> = Record<string, unknown>>(
    id: string,
  ): Promise<SessionRecord<T> | null> {
    const found = await this.repository.readWithTtl(id)
    if (!found) return null
    return {
      id,
      userId: found.raw.userId,
      data: decodeFields(found.raw, this.#options.serializer) as T,
      expiresAt: Date.now() + Math.max(0, found.ttlMs),
    }
  }

  /**
   * Merges `patch` into the session's top-level fields (a field set to `undefined` is deleted),
   * keeping its TTL. Concurrent updates of different fields all persist. Returns false when the
   * session does not exist (it is never recreated). Throws `SessionTooLargeError`, writing
   * nothing, when the merged session would exceed `maxSize`.
   */
  async update(id: string, patch: Record<string, unknown>): Promise<boolean> {
    const { fields } = encodeFields(patch, this.#options.serializer, this.#options.maxSize)
    const remove = Object.keys(patch).filter((name) => patch[name] === undefined)
    const result = await this.repository.write(id, {
      set: [...fields],
      remove,
      ttlMs: -1,
      userId: undefined,
      previousUserId: undefined,
      mode: 'patch',
      expectedVersion: '',
      maxSize: this.#options.maxSize,
    })
    return result.status === 'ok'
  }

  /**
   * Extends the session to `ttl` from now (default: the configured ttl). False when it does not
   * exist. One round trip that transfers none of the session's data; about once per TTL a second
   * one moves the session's entry in its user's index.
   */
  touch(id: string, options: { ttl?: Duration } = {}): Promise<boolean> {
    return this.repository.extend(id, this.#ttl(options.ttl))
  }

  /** Deletes the session and its index entry. True when it existed. */
  destroy(id: string): Promise<boolean> {
    return this.repository.remove(id)
  }

  /**
   * Every live session of `userId` (each verified to exist), soonest expiry first. Index entries
   * whose session is gone are dropped.
   */
  async listForUser<T extends Record<string, unknown> = Record<string, unknown>>(
    userId: UserId,
  ): Promise<Array<SessionRecord<T>>> {
    const user = String(userId)
    const entries = await this.repository.listIndex(user)
    const raws = await Promise.all(
      entries.map((entry) => this.repository.readWithTtl(entry.id).catch(corruptAsNull)),
    )
    const sessions: Array<SessionRecord<T>> = []
    const stale: string[] = []
    entries.forEach((entry, i) => {
      const found = raws[i]
      const raw = found?.raw
      // The index may still hold a session that expired or moved to another user: never list it.
      if (!found || !raw || raw.userId !== user || found.ttlMs === -2) {
        stale.push(entry.id)
        return
      }
      let data: Record<string, unknown>
      try {
        data = decodeFields(raw, this.#options.serializer)
      } catch {
        stale.push(entry.id)
        return
      }
      const expiresAt = found.ttlMs > 0 ? Date.now() + found.ttlMs : 0
      sessions.push({ id: entry.id, userId: user, data: data as T, expiresAt })
    })
    await this.repository.dropIndexEntries(user, stale)
    return sessions.sort((a, b) => a.expiresAt - b.expiresAt)
  }

  /**
   * Destroys every session of `userId` except those in `except` ("log out everywhere else").
   * Returns how many were destroyed. A request still holding a revoked session cannot bring it
   * back: later writes of a destroyed session are dropped.
   */
  async revokeAllForUser(userId: UserId, options: { except?: string | string[] } = {}): Promise<number> {
    const user = String(userId)
    const keep = new Set(typeof options.except === 'string' ? [options.except] : (options.except ?? []))
    const entries = await this.repository.listIndex(user)
    const doomed = entries.filter((entry) => !keep.has(entry.id))
    // An entry may be stale (its id now holds another user's session): delete only this user's.
    const removed = await Promise.all(doomed.map((entry) => this.repository.remove(entry.id, user)))
    await this.repository.dropIndexEntries(
      user,
      doomed.map((entry) => entry.id),
    )
    return removed.filter(Boolean).length
  }
}

function corruptAsNull(error: unknown): null {
  if (error instanceof Error && error.message.startsWith('WRONGTYPE')) return null
  throw error
}
