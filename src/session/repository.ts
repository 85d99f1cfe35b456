import { randomBytes } from 'node:crypto'
import { SessionTooLargeError } from '../errors.js'
import type { ModuleKeys } from '../keys.js'
import type { Redkit } from '../kit.js'
import { EXTEND, INDEX_LIST, INDEX_PUT, READ, REMOVE, TOUCH, WRITE } from './scripts.js'

/** Turns one top-level session value into text and back. */
export interface SessionSerializer {
  stringify(value: unknown): string
  parse(text: string): unknown
}

/** Field prefix of data fields in the session hash; bookkeeping fields start with '#'. */
export const DATA_PREFIX = '.'
const VERSION = '#v'
const USER = '#u'
const INDEX_SCORE = '#x'
const ACCESS_TTL = '#t'
/**
 * A touch moves the index entry only when it would leave less than this (or a quarter of the TTL)
 * before its score: room for clock differences between app servers and Redis.
 */
const INDEX_MARGIN_MS = 60_000
const TAG_CACHE_SIZE = 10_000
/** Ids minted by the repository carry their user's slot tag: `<tag>.<random>`. */
const TAGGED_ID = /^([0-9a-f]{4})\.([A-Za-z0-9_-]+)$/

/** A session as read from Redis: raw serialized data fields, version and indexed user. */
export interface RawSession {
  /** Data field name (without prefix) → serialized value. */
  fields: Map<string, string>
  version: string
  userId: string | undefined
  /** Score of the session's entry in its user's index (ms; 0 when none). */
  indexScore: number
  /** TTL a read extends the session by (ms; 0 when none): see READ. */
  accessTtlMs: number
}

/** What to write (see {@link SessionRepository.write}). */
export interface WritePlan {
  /** Serialized data fields to set. */
  set: Array<[string, string]>
  /** Data fields to delete. */
  remove: string[]
  /** New TTL in ms; -1 keeps the current one. */
  ttlMs: number
  /**
   * `undefined` keeps the stored user, whoever it is now (its index entry still follows a new
   * TTL); `null` clears it. Send a user only when the caller changed it.
   */
  userId: string | null | undefined
  /**
   * The user the caller last saw: its entry is dropped when the user changes, and moved when it is
   * kept and still stored.
   */
  previousUserId: string | undefined
  /** When set, a read with `extend` later extends the session by this TTL (ms). */
  accessTtlMs?: number
  /** 'new' replaces whatever is stored; 'patch' merges into an existing session; 'strict' also refuses on a version change. */
  mode: 'new' | 'patch' | 'strict'
  /** Version the caller loaded (for conflict detection). */
  expectedVersion: string
  /**
   * Largest size in bytes of the session's data fields once this write is merged into what is
   * stored (names and values); over it the write is refused with `SessionTooLargeError` and
   * nothing is written.
   * @default 0 (no limit)
   */
  maxSize?: number
}

/** Outcome of a write. */
export interface WriteResult {
  status: 'ok' | 'gone' | 'conflict'
  version: string
  /** True when another writer changed the session after the caller loaded it. */
  conflicted: boolean
  /** Expiry in ms since the epoch (Redis clock); 0 when unknown. */
  expiresAt: number
  /** Score written to the user index (0 when none). */
  indexScore: number
}

/** One entry of a user index. */
export interface IndexEntry {
  id: string
  /** The session's expiry plus slack: an upper bound, not the expiry itself. */
  score: number
}

/**
 * Storage of sessions shared by `kit.sessions` and the express-session store: one hash per
 * session (`prefix:<namespace>:{tag}...`) and one sorted set per user scored by expiry
 * (`prefix:<namespace>-user:{tag}:<userId>`).
 */
export class SessionRepository {
  readonly #kit: Redkit
  readonly #sessions: ModuleKeys
  readonly #users: ModuleKeys
  readonly #cluster: boolean
  readonly #tags = new Map<string, string>()

  constructor(kit: Redkit, namespace: string) {
    this.#kit = kit
    this.#sessions = kit.keys.module(namespace)
    this.#users = kit.keys.module(`${namespace}-user`)
    this.#cluster = kit.hub.kind === 'cluster'
  }

  /**
   * Slot tag of a user: 16 bits of an FNV-1a hash, so the user id itself is not in the session id
   * (the tag only spreads users over Cluster slots; it is not a security boundary).
   */
  userTag(userId: string): string {
    let tag = this.#tags.get(userId)
    if (tag === undefined) {
      let hash = 0x811c9dc5
      for (let i = 0; i < userId.length; i++) {
        hash ^= userId.charCodeAt(i)
        hash = Math.imul(hash, 0x01000193)
      }
      tag = ((hash >>> 0) & 0xffff).toString(16).padStart(4, '0')
      if (this.#tags.size >= TAG_CACHE_SIZE) this.#tags.clear()
      this.#tags.set(userId, tag)
    }
    return tag
  }

  /** A new id of 144 random bits (CSPRNG) prefixed with the user's slot tag. */
  mintId(userId: string): string {
    return `${this.userTag(userId)}.${randomBytes(18).toString('base64url')}`
  }

  #tagOf(id: string): { tag: string; rest: string | undefined } {
    const match = TAGGED_ID.exec(id)
    return match ? { tag: match[1] as string, rest: match[2] as string } : { tag: id, rest: undefined }
  }

  /** Key of the session hash. */
  sessionKey(id: string): string {
    const { tag, rest } = this.#tagOf(id)
    return rest === undefined ? this.#sessions.tagged(tag) : this.#sessions.tagged(tag, rest)
  }

  /** Key of a user's index. */
  indexKey(userId: string): string {
    return this.#users.tagged(this.userTag(userId), userId)
  }

  /** Session id of a session key found by SCAN (undefined for anything else). */
  idFromKey(key: string): string | undefined {
    const base = this.#sessions.base
    if (!key.startsWith(`${base}{`)) return undefined
    const close = key.indexOf('}', base.length)
    if (close < 0) return undefined
    const tail = key.slice(close + 1)
    try {
      const tag = decodeURIComponent(key.slice(base.length + 1, close))
      if (tail === '') return tag
      if (!tail.startsWith(':')) return undefined
      return `${tag}.${decodeURIComponent(tail.slice(1))}`
    } catch {
      return undefined // not a key this repository wrote
    }
  }

  /** True when one script may touch both keys (always, except across slots on Cluster). */
  #sameSlot(id: string, userId: string): boolean {
    return !this.#cluster || this.#tagOf(id).tag === this.userTag(userId)
  }

  /**
   * Reads a session; null when absent. Throws the reply error for a key of another type. With
   * `extend`, also extends it by its stored access TTL in the same round trip (see READ), and
   * when the extended session would outlive its user index entry, moves the entry in a second one
   * (about once per TTL): a session kept alive by reads alone stays listed and revocable.
   */
  async read(id: string, extend = false): Promise<RawSession | null> {
    const key = this.sessionKey(id)
    const flag = extend ? '1' : '0'
    // The hot path of every request: EVALSHA straight away, EVAL only when the script is unknown.
    const raw = unpack(
      await this.#kit.hub.exec((redis) =>
        redis
          .evalsha(READ.sha, 1, key, flag)
          .catch((error: unknown) =>
            error instanceof Error && error.message.startsWith('NOSCRIPT')
              ? READ.run(redis, [key], [flag])
              : Promise.reject(error),
          ),
      ),
    )
    if (
      extend &&
      raw?.userId !== undefined &&
      raw.accessTtlMs > 0 &&
      !this.indexCovers(raw.accessTtlMs, raw.indexScore)
    ) {
      const { score } = await this.#moveIndex(id, raw.accessTtlMs, raw.userId)
      if (score > 0) raw.indexScore = score
    }
    return raw
  }

  /** Reads a session with its remaining TTL in ms. */
  async readWithTtl(id: string): Promise<{ raw: RawSession; ttlMs: number } | null> {
    const key = this.sessionKey(id)
    const [hash, ttlMs] = await this.#kit.hub.exec((redis) =>
      Promise.all([redis.hgetall(key), redis.pttl(key)]),
    )
    const raw = toRaw(hash)
    return raw ? { raw, ttlMs } : null
  }

  /**
   * Writes a session; the index entry moves in the same script (on Cluster, when the session and
   * the index live in different slots, right after it: readers verify entries, see listIndex).
   */
  async write(id: string, plan: WritePlan): Promise<WriteResult> {
    const key = this.sessionKey(id)
    const keys = [key]
    let newIndex = 0
    let oldIndex = 0
    let laterRemove: string | undefined
    const user = plan.userId
    const previous = plan.previousUserId
    // The user whose index entry the script moves: the new one, or the kept one it should find.
    const indexed = user === undefined ? previous : user
    if (typeof indexed === 'string' && plan.ttlMs >= 0 && this.#sameSlot(id, indexed)) {
      newIndex = keys.push(this.indexKey(indexed))
    }
    if (previous !== undefined && user !== undefined && previous !== user) {
      if (this.#sameSlot(id, previous)) oldIndex = keys.push(this.indexKey(previous))
      else laterRemove = this.indexKey(previous)
    }
    const args: Array<string | number> = [
      id,
      plan.ttlMs,
      user === undefined ? 'keep' : user === null ? 'clear' : 'set',
      indexed ?? '',
      plan.expectedVersion,
      plan.mode === 'new' ? 'n' : plan.mode === 'patch' ? 'p' : 's',
      newIndex,
      oldIndex,
      plan.set.length,
      plan.maxSize ?? 0,
    ]
    for (const [name, value] of plan.set) args.push(DATA_PREFIX + name, value)
    if (plan.accessTtlMs !== undefined) {
      args.push(ACCESS_TTL, plan.accessTtlMs)
      args[8] = plan.set.length + 1
    }
    for (const name of plan.remove) args.push(DATA_PREFIX + name)
    const reply = (await this.#kit.hub.exec((redis) => WRITE.run(redis, keys, args))) as unknown[]
    if (reply[0] === 'too large') throw new SessionTooLargeError(Number(reply[1]), plan.maxSize ?? 0)
    const result: WriteResult = {
      status: reply[0] as WriteResult['status'],
      version: String(reply[1]),
      conflicted: Number(reply[2]) === 1,
      expiresAt: Number(reply[3]),
      indexScore: Number(reply[4]),
    }
    if (result.status === 'ok') {
      const follow: Array<Promise<unknown>> = []
      // The script could not write the entry: the index lives in another slot, or the stored user
      // is not the one the caller expected (another request changed it meanwhile).
      if (Number(reply[5]) === 1 && result.indexScore > 0) {
        const index = this.indexKey(String(reply[6]))
        follow.push(this.#kit.hub.exec((redis) => INDEX_PUT.run(redis, [index], [id, result.indexScore])))
      }
      if (laterRemove) {
        const index = laterRemove
        follow.push(this.#kit.hub.exec((redis) => redis.zrem(index, id)))
      }
      await Promise.all(follow)
    }
    return result
  }

  /**
   * Extends a session's TTL; false when the session is gone. With a user, the index entry moves
   * too, but only when the new expiry comes near its score (`indexScore`, as read with the
   * session): most touches are one PEXPIRE.
   */
  async touch(id: string, ttlMs: number, userId: string | undefined, indexScore = 0): Promise<boolean> {
    const key = this.sessionKey(id)
    if (userId === undefined || this.indexCovers(ttlMs, indexScore)) {
      return this.#kit.hub.exec((redis) => redis.pexpire(key, ttlMs)).then(isOne)
    }
    return (await this.#moveIndex(id, ttlMs, userId)).exists
  }

  /** True when a touch to `ttlMs` from now would leave the index entry scored `indexScore` valid. */
  indexCovers(ttlMs: number, indexScore: number): boolean {
    return Date.now() + ttlMs + Math.min(INDEX_MARGIN_MS, ttlMs / 4) < indexScore
  }

  /**
   * Extends a session and moves the index entry of `userId` (see TOUCH). `score` is the entry's new
   * score, 0 when it did not move. When another request changed the session's user since the
   * caller read it, the stored user's entry is moved instead (through EXTEND, once).
   */
  async #moveIndex(
    id: string,
    ttlMs: number,
    userId: string,
    again = true,
  ): Promise<{ exists: boolean; score: number }> {
    const key = this.sessionKey(id)
    const index = this.indexKey(userId)
    const sameSlot = this.#sameSlot(id, userId)
    const keys = sameSlot ? [key, index] : [key]
    const score = Number(await this.#kit.hub.exec((redis) => TOUCH.run(redis, keys, [ttlMs, id, userId])))
    if (score === -1) {
      if (!again) return { exists: true, score: 0 }
      const exists = await this.#extend(id, ttlMs, false)
      return { exists, score: 0 }
    }
    if (score > 0 && !sameSlot) {
      await this.#kit.hub.exec((redis) => INDEX_PUT.run(redis, [index], [id, score]))
    }
    return { exists: score > 0, score }
  }

  /**
   * Extends a session's TTL without reading it first (`touch` needs the indexed user and score):
   * one round trip, plus one more about once per TTL when the user index entry must move. False
   * when the session is gone.
   */
  extend(id: string, ttlMs: number): Promise<boolean> {
    return this.#extend(id, ttlMs, true)
  }

  async #extend(id: string, ttlMs: number, again: boolean): Promise<boolean> {
    const key = this.sessionKey(id)
    const reply = await this.#kit.hub.exec((redis) => EXTEND.run(redis, [key], [ttlMs, INDEX_MARGIN_MS]))
    if (reply === null) return false
    // A string is the indexed user whose entry must move (see EXTEND); 1: done.
    if (typeof reply !== 'string') return true
    return (await this.#moveIndex(id, ttlMs, reply, again)).exists
  }

  /**
   * Deletes a session and its index entry; returns true when it existed. With `expectedUser`, only
   * a session of that user is deleted, and the caller drops its index entries.
   */
  async remove(id: string, expectedUser?: string): Promise<boolean> {
    const key = this.sessionKey(id)
    const args = expectedUser === undefined ? [] : [expectedUser]
    const [deleted, user] = (await this.#kit.hub.exec((redis) => REMOVE.run(redis, [key], args))) as [
      number,
      string,
    ]
    // With an expected user the caller drops its own index entries in one ZREM.
    if (user !== '' && expectedUser === undefined) {
      const index = this.indexKey(user)
      await this.#kit.hub.exec((redis) => redis.zrem(index, id))
    }
    return Number(deleted) === 1
  }

  /**
   * A user's index entries (those past their score are dropped first), lowest score first. An
   * entry may outlive its session by up to one TTL: callers verify the session exists.
   */
  async listIndex(userId: string): Promise<IndexEntry[]> {
    const index = this.indexKey(userId)
    const flat = (await this.#kit.hub.exec((redis) => INDEX_LIST.run(redis, [index], []))) as string[]
    const entries: IndexEntry[] = []
    for (let i = 0; i + 1 < flat.length; i += 2) {
      entries.push({ id: String(flat[i]), score: Number(flat[i + 1]) })
    }
    return entries
  }

  /** Drops index entries whose session is gone or now belongs to someone else. */
  async dropIndexEntries(userId: string, ids: string[]): Promise<void> {
    if (ids.length === 0) return
    const index = this.indexKey(userId)
    await this.#kit.hub.exec((redis) => redis.zrem(index, ...ids))
  }

  /**
   * Every key of `module` via SCAN on each master (Cluster) or the one server, never KEYS.
   * `count` is the SCAN COUNT hint.
   */
  async scanKeys(which: 'sessions' | 'users', count: number): Promise<string[]> {
    const pattern = (which === 'sessions' ? this.#sessions : this.#users).pattern()
    const found: string[] = []
    await this.#kit.hub.scan(pattern, (keys) => found.push(...keys), count)
    return found
  }

  /** Ids of every stored session. */
  async scanIds(count: number): Promise<string[]> {
    const ids: string[] = []
    for (const key of await this.scanKeys('sessions', count)) {
      const id = this.idFromKey(key)
      if (id !== undefined) ids.push(id)
    }
    return ids
  }

  /** Deletes every session and every user index of this namespace. */
  async clear(count: number): Promise<void> {
    const keys = [...(await this.scanKeys('sessions', count)), ...(await this.scanKeys('users', count))]
    // One UNLINK per key: on Cluster keys of one node still span many slots.
    await Promise.all(keys.map((key) => this.#kit.hub.exec((redis) => redis.unlink(key))))
  }
}

function unpack(packed: unknown): RawSession | null {
  return typeof packed === 'string' ? fromPairs(JSON.parse(packed) as string[]) : null
}

function isOne(reply: number): boolean {
  return reply === 1
}

function toRaw(hash: Record<string, string>): RawSession | null {
  const pairs: string[] = []
  for (const name in hash) pairs.push(name, hash[name] as string)
  return fromPairs(pairs)
}

function fromPairs(pairs: string[]): RawSession | null {
  let version: string | undefined
  let userId: string | undefined
  let indexScore = 0
  let accessTtlMs = 0
  const fields = new Map<string, string>()
  for (let i = 0; i + 1 < pairs.length; i += 2) {
    const name = pairs[i] as string
    const value = pairs[i + 1] as string
    if (name.charCodeAt(0) === 46 /* DATA_PREFIX */) fields.set(name.slice(1), value)
    else if (name === VERSION) version = value
    else if (name === USER) userId = value
    else if (name === INDEX_SCORE) indexScore = Number(value)
    else if (name === ACCESS_TTL) accessTtlMs = Number(value)
  }
  if (version === undefined && fields.size === 0) return null
  return { fields, version: version ?? '', userId, indexScore, accessTtlMs }
}
