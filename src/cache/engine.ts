import { randomUUID } from 'node:crypto'
import { decode, encode } from '../codec/index.js'
import { isConnectionError } from '../connection/hub.js'
import { CodecError } from '../errors.js'
import { keyPart, type ModuleKeys, scanPattern } from '../keys.js'
import type { Redkit } from '../kit.js'
import { type Duration, parseDuration } from '../util/duration.js'
import { LuaScript } from '../util/script.js'
import { type BusMessage, CacheBus } from './bus.js'
import { entryIdentity, packEntry, type RawEntry, type StoredEntry, unpackEntry } from './entry.js'
import { FillGuard } from './fill-guard.js'
import { InvalidationLog, type InvalidationMark } from './invalidations.js'
import { type MemoryItem, MemoryTier } from './memory.js'
import {
  type CacheEngineOptions,
  checkCompress,
  checkJitter,
  checkSize,
  type ResolvedCacheEngineOptions,
  resolveCacheEngineOptions,
} from './options.js'
import { SingleFlight } from './single-flight.js'
import { TagVersions } from './tags.js'

declare module '../events.js' {
  interface RedkitEventMap {
    /** A cached value was served fresh, from memory (`l1`) or Redis (`l2`). */
    'cache:hit': { cache: string; key: string; layer: 'l1' | 'l2' }
    /** No usable entry: the factory / origin runs. */
    'cache:miss': { cache: string; key: string }
    /** A stale entry was served (grace window, or the factory failed and stale-if-error applied). */
    'cache:stale': { cache: string; key: string }
    /** The cache was skipped: Redis unavailable, value too large, not encodable, ... */
    'cache:bypass': { cache: string; reason: string }
    /** An entry was written to Redis. */
    'cache:store': { cache: string; key: string; bytes: number }
    /** Entries were invalidated by tag or deleted by key, or the namespace was cleared. */
    'cache:invalidate': { cache: string; tags?: string[]; keys?: string[] }
    /** A background refresh or a store failed; the caller was not affected. */
    'cache:error': { cache: string; key: string; error: Error }
  }
}

/** Options of {@link CacheEngine.set}. */
export interface SetOptions {
  /** Time to live (fresh). @default the engine's `ttl` ('5m') */
  ttl?: Duration
  /** Extra time the entry may be served stale while one refresh runs. @default the engine's `grace` (0) */
  grace?: Duration
  /** Extra time the entry may be served when the factory throws. @default the engine's `staleIfError` (0) */
  staleIfError?: Duration
  /** Tags for {@link CacheEngine.invalidateTags}. @default [] */
  tags?: readonly string[]
  /** Fraction of the TTL removed at random. @default the engine's `jitter` (0) */
  jitter?: number
}

/** What a factory receives. */
export interface FactoryContext {
  /** The cache key (as given, not the Redis key). */
  key: string
  /** True when refreshing an entry that is still served (grace or early refresh). */
  background: boolean
}

/** Options of {@link CacheEngine.getOrSet}. */
export interface GetOrSetOptions<T> extends Omit<SetOptions, 'ttl'> {
  /** Time to live; a function decides from the value (e.g. a shorter TTL for empty results). */
  ttl?: Duration | ((value: T) => Duration)
  /**
   * Probabilistic early refresh (XFetch): `true` (beta 1) or a beta > 0; a hot entry is refreshed
   * in the background shortly before it expires, more eagerly the longer its factory took.
   * @default false
   */
  xfetch?: boolean | number
  /** Encoded values over this many bytes are not stored. @default the engine's `maxSize` */
  maxSize?: number
  /** Compress encoded values of at least this many bytes. @default the engine's `compressAbove` */
  compressAbove?: number | false
}

/** Options of {@link CacheEngine.writeEntry}. */
export interface WriteEntryOptions {
  /** Milliseconds the entry is fresh. */
  freshMs: number
  /** Milliseconds it is kept after that (for stale serving). @default 0 */
  staleMs?: number
  /** @default [] */
  tags?: readonly string[]
  /**
   * Tag versions taken with {@link CacheEngine.tagSnapshot} BEFORE the origin was called: then an
   * invalidation that happens while the origin runs makes this write count as absent.
   * @default versions read at write time
   */
  snapshot?: TagSnapshot
  /**
   * A mark from {@link CacheEngine.invalidationMark} taken BEFORE the origin was called, for
   * tags that are known only from its answer (and for purges): the write is skipped when, after
   * the mark, this instance learned that `key` was deleted, its namespace cleared or one of
   * `tags` invalidated, and undone when such news from another instance arrives just after it.
   * @default undefined (no such check)
   */
  since?: InvalidationMark
}

/** Versions of some tags at one moment (see {@link CacheEngine.tagSnapshot}). */
export interface TagSnapshot {
  tags: readonly string[]
  versions: readonly number[]
}

interface Policy<T> {
  ttl: number | ((value: T) => number)
  graceMs: number
  staleIfErrorMs: number
  tags: readonly string[]
  jitter: number
  maxSize: number
  compressAbove: number | false
}

/** What a read found: the entry, where, and whether Redis failed while looking (stale memory copy). */
interface Read {
  entry: StoredEntry
  layer: 'l1' | 'l2'
  down?: true
}

const RELEASE = new LuaScript(
  `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`,
)
const POLL_MS = 50
/** Keys per UNLINK batch and per bus message when writes are taken back. */
const UNDO_CHUNK = 500

/** State shared by an engine and all its namespaces: memory tier, bus, tag versions, flights. */
class CacheCore {
  readonly kit: Redkit
  readonly keys: ModuleKeys
  readonly memory: MemoryTier | null
  readonly tags: TagVersions
  readonly bus: CacheBus
  readonly flights = new SingleFlight()
  /** Keeps reads from Redis that overlapped a write, delete or clear out of the memory tier. */
  readonly fills = new FillGuard()
  readonly waiters = new Map<string, Set<() => void>>()
  /** GETs in flight, shared by concurrent readers of one key. */
  readonly reads = new Map<string, Promise<StoredEntry | undefined>>()
  readonly invalidations = new InvalidationLog((rkeys) => this.undo(rkeys))
  /** When the subscriber connection dropped, while it has not subscribed again. */
  #downSince: number | undefined

  constructor(kit: Redkit, options: ResolvedCacheEngineOptions) {
    this.kit = kit
    this.keys = kit.keys.module('cache')
    this.memory = options.l1 ? new MemoryTier(options.l1.maxBytes) : null
    this.tags = new TagVersions(kit, this.keys, options.tagCacheTtlMs)
    this.bus = new CacheBus(
      kit,
      this.keys.key('#bus'),
      (message) => this.receive(message),
      () => this.lost(),
    )
    void this.bus.start()
    kit.hub.onClose(() => this.bus.stop())
    if (!kit.hub.closed) {
      const subscriber = kit.hub.dedicated('subscriber')
      const down = () => {
        this.#downSince ??= Date.now()
      }
      subscriber.on('close', down)
      subscriber.on('end', down)
    }
  }

  receive(message: BusMessage): void {
    if (message.t === 'keys') {
      if (message.d === 1) this.keysDeleted(message.k)
      else this.dropKeys(message.k, message.k.length === 1 ? message.e : undefined)
      for (const key of message.k) this.wake(key)
    } else if (message.t === 'tags') {
      this.tagsInvalidated(message.v)
    } else if (message.t === 'clear') {
      this.prefixCleared(message.p)
    }
  }

  // Each kind of news, heard here or over the bus, goes through one of the methods below, so that
  // shared reads, reads in flight (fills), memory and the invalidation log all learn of it.

  /** Keys were deleted (a purge, here or elsewhere). */
  keysDeleted(rkeys: readonly string[]): void {
    this.dropKeys(rkeys)
    this.invalidations.keys(rkeys)
  }

  /** Tags were invalidated; `versions` are their new versions. */
  tagsInvalidated(versions: Readonly<Record<string, number>>): void {
    for (const [tag, version] of Object.entries(versions)) this.tags.learn(tag, version)
    this.dropTagged(new Set(Object.keys(versions)))
    this.invalidations.tags(versions)
  }

  /** Every key starting with `prefix` was deleted (a namespace cleared). */
  prefixCleared(prefix: string): void {
    this.dropPrefix(prefix)
    this.invalidations.prefix(prefix)
  }

  /** The subscriber reconnected: messages may have been lost. */
  lost(): void {
    this.reads.clear()
    this.fills.changedAll()
    this.tags.forget()
    this.memory?.clear()
    this.invalidations.lost(this.#downSince)
    this.#downSince = undefined
  }

  /**
   * `rkey` was written (`written`: the identity of the entry now stored) or deleted: a shared read
   * started before must not be joined, a read in flight must not fill memory with anything else,
   * and memory drops its copy.
   */
  dropKey(rkey: string, written?: string): void {
    this.reads.delete(rkey)
    this.fills.changed(rkey, written)
    this.memory?.delete(rkey)
  }

  dropKeys(rkeys: readonly string[], written?: string): void {
    for (const rkey of rkeys) this.dropKey(rkey, written)
  }

  /** Entries carrying one of `tags` are invalid: reads in flight are kept out by the version check. */
  dropTagged(tags: ReadonlySet<string>): void {
    this.reads.clear()
    this.memory?.deleteTagged(tags)
  }

  dropPrefix(prefix: string): void {
    this.reads.clear()
    this.fills.changedAll()
    this.memory?.deletePrefix(prefix)
  }

  /**
   * Deletes keys written after an invalidation this instance heard of only later: in batches,
   * one after the other, each announced in its own message, so that many keys (after the bus
   * reconnected) make neither one huge pipeline nor one huge message.
   */
  undo(rkeys: readonly string[]): void {
    this.dropKeys(rkeys)
    void this.#unlink(rkeys)
  }

  async #unlink(rkeys: readonly string[]): Promise<void> {
    for (let i = 0; i < rkeys.length; i += UNDO_CHUNK) {
      const chunk = rkeys.slice(i, i + UNDO_CHUNK)
      try {
        await this.kit.hub.exec((redis) => Promise.all(chunk.map((rkey) => redis.unlink(rkey))))
      } catch (error) {
        // The later batches would fail alike.
        this.kit.events.emit('error', { error: error as Error, connection: 'cache' })
        return
      } finally {
        // A read that started before the UNLINK reached Redis may have put an entry back meanwhile.
        this.dropKeys(chunk)
      }
      await this.bus.publish({ i: this.bus.id, t: 'keys', k: chunk })
    }
  }

  wake(key: string): void {
    const set = this.waiters.get(key)
    if (!set) return
    this.waiters.delete(key)
    for (const resolve of set) resolve()
  }
}

/**
 * The cache engine: values (typed through the codec) or raw entries in two tiers, an in-process
 * LRU in front of Redis, with tags, stale serving, stampede protection and cross-instance
 * invalidation. Redis unavailable: value calls fail open (the factory runs, an event says so),
 * raw calls reject with `ConnectionError` so the caller can decide.
 *
 * Values served from memory are shared between callers: treat them as read-only.
 *
 * @example
 * const user = await kit.cache.getOrSet(`user:${id}`, () => db.user(id), { ttl: '10m', grace: '1m', tags: [`user:${id}`] })
 * await kit.cache.invalidateTags([`user:${id}`])
 */
export class CacheEngine {
  /** Namespace name, as in the `cache` field of events. */
  readonly name: string
  readonly options: ResolvedCacheEngineOptions
  readonly #core: CacheCore
  readonly #kit: Redkit
  readonly #memory: MemoryTier | null
  /** `prefix:cache:<name>:` */
  readonly #base: string
  readonly #entryBase: string
  readonly #leaseBase: string

  constructor(kit: Redkit, options: CacheEngineOptions = {}, parent?: CacheEngine) {
    this.options = resolveCacheEngineOptions(options, parent ? parentBase(parent.options) : undefined)
    this.name = this.options.name
    this.#kit = kit
    this.#core = parent ? parent.#core : new CacheCore(kit, this.options)
    this.#memory = this.options.l1 === false ? null : this.#core.memory
    this.#base = `${this.#core.keys.key(this.name)}:`
    this.#entryBase = `${this.#base}e:`
    this.#leaseBase = `${this.#base}l:`
  }

  /**
   * Another namespace on the same memory tier, bus and tag versions (keys under
   * `prefix:cache:<name>:`, events with `cache: name`). Options not given are inherited.
   *
   * @example
   * const responses = kit.cache.namespace('response', { l1: false })
   */
  namespace(name: string, options: Omit<CacheEngineOptions, 'name'> = {}): CacheEngine {
    return new CacheEngine(this.#kit, { ...options, name }, this)
  }

  /** The Redis key holding `key`'s entry. */
  redisKey(key: string): string {
    return this.#entryBase + keyPart(key)
  }

  // ---------------------------------------------------------------- value API

  /**
   * The fresh value stored under `key`, or `undefined` (absent, expired, invalidated by a tag, or
   * Redis unavailable with nothing in memory).
   */
  async get<T = unknown>(key: string): Promise<T | undefined> {
    const rkey = this.redisKey(key)
    const read = await this.#readSafe(rkey)
    const now = Date.now()
    if (read !== null && read !== 'down' && now < read.entry.freshUntil) {
      this.#hit(key, read.layer)
      return this.#decode<T>(read.entry)
    }
    if (this.#kit.events.has('cache:miss')) this.#kit.events.emit('cache:miss', { cache: this.name, key })
    return undefined
  }

  /**
   * Stores `value` under `key`. Resolves `true` when stored in Redis, `false` when skipped (too
   * large, Redis unavailable: see the `cache:bypass` event). Throws `CodecError` for values that
   * cannot be encoded.
   */
  async set(key: string, value: unknown, options: SetOptions = {}): Promise<boolean> {
    const policy = this.#policy(options)
    const encoded = encode(value, { compressAbove: policy.compressAbove })
    const ttl = policy.ttl as number
    try {
      return await this.#storeValue(key, this.redisKey(key), encoded, ttl, policy, undefined, 0, value)
    } catch (error) {
      if (!isConnectionError(error)) throw error
      this.#bypass('redis-unavailable')
      return false
    }
  }

  /**
   * The cached value, or the factory's result (stored for next time). Concurrent misses for one
   * key run the factory once in this process and, through a short Redis lease, once across
   * processes (others wait up to `wait` for that result). Within `grace` after expiry the stale
   * value is returned while exactly one background refresh runs; within `staleIfError` the stale
   * value is returned when the factory throws. Redis unavailable: the factory runs (fail open).
   * A result whose factory was running when this instance learned that the key was deleted or its
   * namespace cleared is returned but not stored (it may come from the data before).
   *
   * @example
   * const report = await kit.cache.getOrSet('report:daily', () => buildReport(), { ttl: '10m', grace: '1h', tags: ['reports'] })
   */
  async getOrSet<T>(
    key: string,
    factory: (context: FactoryContext) => T | Promise<T>,
    options: GetOrSetOptions<T> = {},
  ): Promise<T> {
    const rkey = this.redisKey(key)
    const read = await this.#readSafe(rkey)
    const now = Date.now()
    if (read !== null && read !== 'down') {
      const entry = read.entry
      if (now < entry.freshUntil) {
        if (options.xfetch && earlyRefresh(entry, now, options.xfetch)) {
          this.#refresh(key, rkey, factory, options, entry)
        }
        this.#hit(key, read.layer)
        return this.#decode<T>(entry)
      }
      const graceMs =
        options.grace === undefined ? this.options.graceMs : parseDuration(options.grace, 'grace')
      if (now < entry.freshUntil + graceMs) {
        // Told before the refresh sends its first command, as a miss is before its computation.
        if (this.#kit.events.has('cache:stale'))
          this.#kit.events.emit('cache:stale', { cache: this.name, key })
        // With Redis unavailable a refresh could not be stored: keep serving the stale copy.
        if (!read.down) this.#refresh(key, rkey, factory, options, entry)
        return this.#decode<T>(entry)
      }
    }
    if (this.#kit.events.has('cache:miss')) this.#kit.events.emit('cache:miss', { cache: this.name, key })
    const stale = read === null || read === 'down' ? undefined : read.entry
    // Joined for one lease at most: past it, other processes count the computation as dead, and a
    // factory that never settles must not hold the key in this process forever either.
    return this.#core.flights.run(
      rkey,
      () =>
        this.#compute(
          key,
          rkey,
          factory,
          this.#policy(options),
          stale,
          false,
          read === 'down' || read?.down === true,
        ),
      this.options.leaseMs,
    )
  }

  /** Deletes entries by key, in this instance's memory, in Redis and in every other instance's memory. */
  async delete(...keys: string[]): Promise<void> {
    await this.deleteKeys(keys)
  }

  /**
   * Deletes entries by key everywhere (purge). Rejects with `ConnectionError` when Redis is
   * unavailable (this instance's memory is cleared anyway).
   */
  async deleteKeys(keys: readonly string[]): Promise<void> {
    if (keys.length === 0) return
    const rkeys = keys.map((key) => this.redisKey(key))
    const core = this.#core
    core.keysDeleted(rkeys)
    try {
      await this.#kit.hub.exec((redis) => Promise.all(rkeys.map((rkey) => redis.unlink(rkey))))
    } finally {
      // A read that started before the UNLINK reached Redis may have put the old entry back meanwhile.
      core.dropKeys(rkeys)
    }
    await this.#core.bus.publish({ i: this.#core.bus.id, t: 'keys', k: rkeys, d: 1 })
    if (this.#kit.events.has('cache:invalidate')) {
      this.#kit.events.emit('cache:invalidate', { cache: this.name, keys: [...keys] })
    }
  }

  /**
   * Invalidates every entry carrying one of `tags`, in every namespace and instance: one INCR
   * per tag and one PUBLISH, however many entries carry them (works on Cluster). Rejects with
   * `ConnectionError` when Redis is unavailable.
   *
   * @example
   * await kit.cache.invalidateTags(['orders'])
   */
  async invalidateTags(tags: readonly string[]): Promise<void> {
    const unique = [...new Set(tags)]
    if (unique.length === 0) return
    const core = this.#core
    core.dropTagged(new Set(unique))
    const versions = await core.tags.bump(unique)
    core.tagsInvalidated(versions)
    await core.bus.publish({ i: core.bus.id, t: 'tags', v: versions })
    // A racing write that read the old version before our INCR may have refilled memory.
    core.dropTagged(new Set(unique))
    if (this.#kit.events.has('cache:invalidate')) {
      this.#kit.events.emit('cache:invalidate', { cache: this.name, tags: unique })
    }
  }

  /**
   * Deletes every entry of this namespace: SCAN (never KEYS) on every master, UNLINK in batches,
   * then every instance drops the namespace from memory. Returns the number of keys removed.
   */
  async clear(): Promise<number> {
    const core = this.#core
    core.prefixCleared(this.#base)
    const pattern = scanPattern(this.#base)
    let removed = 0
    try {
      await this.#kit.hub.scan(pattern, async (keys) => {
        // One UNLINK per key: keys of one node may still sit in different Cluster slots.
        await this.#kit.hub.exec((redis) => Promise.all(keys.map((key) => redis.unlink(key))))
        removed += keys.length
      })
    } finally {
      // Reads that started before their key was unlinked may have put old entries back meanwhile.
      core.dropPrefix(this.#base)
    }
    await this.#core.bus.publish({ i: this.#core.bus.id, t: 'clear', p: this.#base })
    if (this.#kit.events.has('cache:invalidate'))
      this.#kit.events.emit('cache:invalidate', { cache: this.name })
    return removed
  }

  // ---------------------------------------------------------------- raw entry API

  /**
   * The stored entry (memory, then Redis), whatever its freshness, or `undefined` when absent,
   * past `staleUntil` or invalidated by a tag after it was stored. Emits no hit/miss events (the
   * caller judges freshness). Rejects with `ConnectionError` when Redis is unavailable and memory
   * holds nothing for the key.
   */
  async readEntry(key: string): Promise<RawEntry | undefined> {
    const read = await this.#read(this.redisKey(key))
    return read?.entry
  }

  /**
   * Stores raw bytes. Resolves `false` when a `since` mark shows an invalidation after it (then
   * nothing stays stored; `cache:bypass` with reason `invalidated`). Rejects with
   * `ConnectionError` when Redis is unavailable. Emits `cache:store`.
   *
   * @example
   * const since = cache.invalidationMark()
   * const { body, tags } = await callOrigin()
   * await cache.writeEntry(key, body, { freshMs: 60_000, staleMs: 30_000, tags, since })
   */
  async writeEntry(key: string, value: Buffer, options: WriteEntryOptions): Promise<boolean> {
    const tags = options.tags ?? []
    const snapshot = options.snapshot && sameTags(options.snapshot.tags, tags) ? options.snapshot : undefined
    const versions = snapshot ? snapshot.versions : tags.length > 0 ? await this.#core.tags.current(tags) : []
    const now = Date.now()
    return this.#write(
      key,
      this.redisKey(key),
      {
        value,
        storedAt: now,
        freshUntil: now + options.freshMs,
        staleUntil: now + options.freshMs + (options.staleMs ?? 0),
        tags: [...tags],
        tagVersions: [...versions],
        computeMs: 0,
        decoded: undefined,
        checkedUntil: 0,
      },
      undefined,
      options.since,
    )
  }

  /**
   * A mark for {@link WriteEntryOptions.since}: take it before calling the origin whose answer
   * will be written. Synchronous and local (no Redis round trip).
   */
  invalidationMark(): InvalidationMark {
    return this.#core.invalidations.mark()
  }

  /** Versions of `tags` now; pass it to {@link CacheEngine.writeEntry} as `snapshot`. */
  async tagSnapshot(tags: readonly string[]): Promise<TagSnapshot> {
    return { tags: [...tags], versions: tags.length > 0 ? await this.#core.tags.current(tags) : [] }
  }

  // ---------------------------------------------------------------- stampede tools

  /** Runs `fn` once per key at a time in this process; concurrent callers share its promise. */
  singleFlight<T>(key: string, fn: () => Promise<T>): Promise<T> {
    return this.#core.flights.run(`${this.#base}f:${key}`, fn)
  }

  /**
   * Takes the cross-process lease for computing `key` for `ms` milliseconds: a token when taken,
   * `null` when another process holds it. Rejects with `ConnectionError` when Redis is unavailable.
   */
  async acquireLease(key: string, ms: number): Promise<string | null> {
    const token = randomUUID()
    const leaseKey = this.#leaseBase + keyPart(key)
    const reply = await this.#kit.hub.exec((redis) =>
      redis.set(leaseKey, token, 'PX', Math.max(1, Math.round(ms)), 'NX'),
    )
    return reply === 'OK' ? token : null
  }

  /** Releases a lease if `token` still holds it. Never rejects. */
  async releaseLease(key: string, token: string): Promise<void> {
    const leaseKey = this.#leaseBase + keyPart(key)
    await this.#kit.hub.exec((redis) => RELEASE.run(redis, [leaseKey], [token])).catch(() => undefined)
  }

  /**
   * Waits up to `ms` for a fresh entry under `key` (written by another process holding the
   * lease): woken by the bus when it is written, polling as a fallback. `undefined` on timeout or
   * when Redis is unavailable.
   *
   * With `leaseOf` (the key given to {@link CacheEngine.acquireLease} by the holder), it also
   * stops, with `undefined`, once that lease is gone and no entry came: the holder found nothing
   * to store (or failed), and waiting on would only delay the caller's own call.
   *
   * @example
   * const token = await cache.acquireLease(key, 10_000)
   * if (token === null) entry = await cache.waitForEntry(key, 3000, { leaseOf: key })
   */
  async waitForEntry(
    key: string,
    ms: number,
    options: { leaseOf?: string } = {},
  ): Promise<RawEntry | undefined> {
    const rkey = this.redisKey(key)
    const read = await this.#waitFor(rkey, ms, options.leaseOf)
    return typeof read === 'object' ? read.entry : undefined
  }

  // ---------------------------------------------------------------- internals

  /**
   * Waits up to `ms` for a fresh entry. With `leaseOf`, also stops early with `'released'` when
   * that key's lease is gone without an entry (its holder failed): then the caller may compute.
   */
  async #waitFor(rkey: string, ms: number, leaseOf?: string): Promise<Read | 'released' | undefined> {
    const deadline = Date.now() + ms
    for (;;) {
      const remaining = deadline - Date.now()
      if (remaining <= 0) return undefined
      await new Promise<void>((resolve) => {
        let set = this.#core.waiters.get(rkey)
        if (!set) {
          set = new Set()
          this.#core.waiters.set(rkey, set)
        }
        const waiters = set
        const done = () => {
          clearTimeout(timer)
          waiters.delete(done)
          if (waiters.size === 0 && this.#core.waiters.get(rkey) === waiters) this.#core.waiters.delete(rkey)
          resolve()
        }
        const timer = setTimeout(done, Math.min(POLL_MS, remaining))
        waiters.add(done)
      })
      try {
        const read = await this.#read(rkey)
        if (read && Date.now() < read.entry.freshUntil) return read
        if (leaseOf !== undefined) {
          const leaseKey = this.#leaseBase + keyPart(leaseOf)
          const held = await this.#kit.hub.exec((redis) => redis.exists(leaseKey))
          if (held === 0) return 'released'
        }
      } catch (error) {
        if (isConnectionError(error)) return undefined
        throw error
      }
    }
  }

  /**
   * Memory, then Redis. A memory copy past its freshness is checked against Redis (another
   * instance may have refreshed it); so is one whose tag versions are no longer trusted.
   */
  async #read(rkey: string): Promise<Read | undefined> {
    const memory = this.#memory
    let stale: MemoryItem | undefined
    if (memory) {
      const now = Date.now()
      const item = memory.get(rkey, now)
      if (item) {
        if (now < item.freshUntil && (now < item.checkedUntil || this.#recheck(item, now))) {
          return { entry: item, layer: 'l1' }
        }
        stale = item
      }
    }
    let entry: StoredEntry | undefined
    try {
      entry = await this.#readRedis(rkey)
    } catch (error) {
      if (stale && isConnectionError(error)) {
        this.#bypass('redis-unavailable')
        // `down`: the caller must not spend another command timeout on Redis for this call.
        return { entry: stale, layer: 'l1', down: true }
      }
      throw error
    }
    if (entry === undefined) {
      if (stale) memory?.delete(rkey)
      return undefined
    }
    return { entry, layer: 'l2' }
  }

  /**
   * One GET per key at a time: concurrent readers of a hot key share the round trip and the
   * decoded value. Local writes, deletes and invalidations drop the shared read, so a caller that
   * starts after them never receives what was read before them.
   */
  #readRedis(rkey: string): Promise<StoredEntry | undefined> {
    const reads = this.#core.reads
    let read = reads.get(rkey)
    if (read === undefined) {
      read = this.#fetch(rkey)
      reads.set(rkey, read)
      const shared = read
      const forget = () => {
        if (reads.get(rkey) === shared) reads.delete(rkey)
      }
      read.then(forget, forget)
    }
    return read
  }

  async #fetch(rkey: string): Promise<StoredEntry | undefined> {
    const memory = this.#memory
    const fills = this.#core.fills
    const ticket = memory ? fills.begin(rkey) : undefined
    try {
      const bytes = await this.#kit.hub.exec((redis) => redis.getBuffer(rkey))
      const entry = bytes === null ? undefined : await this.#usable(bytes)
      // What the GET found may go to memory only when no write, delete or clear of this key came
      // since it was sent (here, or elsewhere through the bus), unless each wrote this very entry:
      // otherwise memory already holds what came after it.
      if (
        memory &&
        ticket &&
        fills.mayFill(ticket, () => (bytes === null ? undefined : entryIdentity(bytes)))
      ) {
        const until = entry === undefined ? 0 : this.#core.tags.knownUntil(entry.tags, entry.tagVersions)
        if (entry !== undefined && until > Date.now()) {
          entry.checkedUntil = until
          // The Buffer from ioredis is ours alone; keep it (no copy).
          memory.set(rkey, entry)
        } else memory.delete(rkey)
      }
      return entry
    } finally {
      if (ticket) fills.end(ticket)
    }
  }

  /** The stored entry, or `undefined` when past its stale window or invalidated by a tag. */
  async #usable(bytes: Buffer): Promise<StoredEntry | undefined> {
    const entry = unpackEntry(bytes)
    if (!entry || Date.now() >= entry.staleUntil) return undefined
    if (entry.tags.length > 0) {
      const valid = this.#core.tags.knownCurrent(entry.tags, entry.tagVersions)
        ? true
        : await this.#core.tags.valid(entry.tags, entry.tagVersions)
      if (!valid) return undefined
    }
    return entry
  }

  /**
   * A tagged memory copy whose check ran out: still current by the tag versions memory trusts
   * (then served from memory again until they expire), or to be checked against Redis.
   */
  #recheck(item: MemoryItem, now: number): boolean {
    const until = this.#core.tags.knownUntil(item.tags, item.tagVersions, now)
    if (until <= now) return false
    item.checkedUntil = until
    return true
  }

  /** {@link #read} for value calls: Redis unavailable becomes `'down'` plus a bypass event. */
  async #readSafe(rkey: string): Promise<Read | null | 'down'> {
    try {
      return (await this.#read(rkey)) ?? null
    } catch (error) {
      if (!isConnectionError(error)) throw error
      this.#bypass('redis-unavailable')
      return 'down'
    }
  }

  #decode<T>(entry: StoredEntry): T {
    if (entry.decoded) return entry.decoded.value as T
    const value = decode<T>(entry.value)
    // Kept only where the entry lives on in the memory tier: there every later hit reuses it.
    // Without the tier, keeping it measurably slowed Redis hits (about 20 µs per read here).
    if (this.#memory) entry.decoded = { value }
    return value
  }

  #hit(key: string, layer: 'l1' | 'l2'): void {
    if (this.#kit.events.has('cache:hit'))
      this.#kit.events.emit('cache:hit', { cache: this.name, key, layer })
  }

  #bypass(reason: string): void {
    if (this.#kit.events.has('cache:bypass'))
      this.#kit.events.emit('cache:bypass', { cache: this.name, reason })
  }

  #policy<T>(options: GetOrSetOptions<T> | SetOptions): Policy<T> {
    const o = this.options
    const ttl = options.ttl
    return {
      ttl:
        ttl === undefined
          ? o.ttlMs
          : typeof ttl === 'function'
            ? (value: T) => parseDuration((ttl as (value: T) => Duration)(value), 'ttl')
            : parseDuration(ttl, 'ttl'),
      graceMs: options.grace === undefined ? o.graceMs : parseDuration(options.grace, 'grace'),
      staleIfErrorMs:
        options.staleIfError === undefined
          ? o.staleIfErrorMs
          : parseDuration(options.staleIfError, 'staleIfError'),
      tags: options.tags ?? [],
      jitter: options.jitter === undefined ? o.jitter : checkJitter(options.jitter, 'jitter'),
      maxSize:
        'maxSize' in options && options.maxSize !== undefined
          ? checkSize(options.maxSize, 'maxSize')
          : o.maxSize,
      compressAbove:
        'compressAbove' in options && options.compressAbove !== undefined
          ? checkCompress(options.compressAbove, 'compressAbove')
          : o.compressAbove,
    }
  }

  /** Runs the factory for a missing or stale entry, at most once across processes (lease). */
  async #compute<T>(
    key: string,
    rkey: string,
    factory: (context: FactoryContext) => T | Promise<T>,
    policy: Policy<T>,
    stale: StoredEntry | undefined,
    background: boolean,
    redisDown: boolean,
  ): Promise<T> {
    let down = redisDown
    let snapshot: number[] | undefined
    let token: string | null = null
    if (!down) {
      try {
        snapshot = policy.tags.length > 0 ? await this.#core.tags.current(policy.tags) : []
        let stored: StoredEntry | undefined
        ;({ token, stored } = await this.#lease(key, rkey, stale))
        const deadline = Date.now() + this.options.waitMs
        // Lost: wait for the holder's result, unless the read sent with the lease request found it.
        while (token === null && stored === undefined && !background && Date.now() < deadline) {
          const read = await this.#waitFor(rkey, deadline - Date.now(), key)
          if (read === undefined) break // not delivered in time: compute it ourselves
          if (read !== 'released') {
            this.#hit(key, read.layer)
            return this.#decode<T>(read.entry)
          }
          // The holder gave up (its factory failed): take over, unless another waiter did.
          ;({ token, stored } = await this.#lease(key, rkey, stale))
        }
        // Another instance stored the value since this one read the entry: won, it released its
        // lease in between; lost, it holds it still.
        if (stored) {
          if (token !== null) void this.releaseLease(key, token)
          if (background) return undefined as T
          this.#hit(key, 'l2')
          return this.#decode<T>(stored)
        }
        if (token === null && background) return undefined as T // another process refreshes it
      } catch (error) {
        if (!isConnectionError(error)) throw error
        this.#bypass('redis-unavailable')
        down = true
      }
    }
    try {
      // Taken as the factory starts: a delete or clear this instance learns of afterwards may
      // have come after the data the factory reads, and then its result is not kept.
      const since = this.#core.invalidations.mark()
      const started = performance.now()
      let value: T
      try {
        value = await factory({ key, background })
      } catch (error) {
        if (stale && policy.staleIfErrorMs > 0 && Date.now() < stale.freshUntil + policy.staleIfErrorMs) {
          if (this.#kit.events.has('cache:stale'))
            this.#kit.events.emit('cache:stale', { cache: this.name, key })
          return this.#decode<T>(stale)
        }
        throw error
      }
      if (!down && snapshot) {
        const computeMs = performance.now() - started
        await this.#storeComputed(key, rkey, value, policy, snapshot, computeMs, since)
      }
      return value
    } finally {
      if (token) void this.releaseLease(key, token)
    }
  }

  /**
   * Asks for the lease to compute `key` and reads the entry once the SET NX has run (see
   * {@link #storedSince}); on Cluster, only when the lease was won.
   */
  async #lease(
    key: string,
    rkey: string,
    stale: StoredEntry | undefined,
  ): Promise<{ token: string | null; stored: StoredEntry | undefined }> {
    const leasing = this.acquireLease(key, this.options.leaseMs)
    // One connection (standalone, Sentinel): the GET sent in the same tick runs right after the
    // SET NX, as if it had waited for its answer, at no extra round trip. On Cluster the entry and
    // the lease sit in different slots, maybe on different nodes: only that answer tells.
    const cluster = this.#kit.hub.kind === 'cluster'
    const reading = cluster ? undefined : this.#storedSince(rkey, stale)
    const [lease, read] = await Promise.allSettled([leasing, reading])
    if (lease.status === 'rejected') throw lease.reason
    const token = lease.value
    try {
      if (read.status === 'rejected') throw read.reason
      const stored =
        cluster && token !== null
          ? await this.#storedSince(rkey, stale)
          : (read.value as StoredEntry | undefined)
      return { token, stored }
    } catch (error) {
      // Unable to read, this caller will not store its result either: the lease is of no use.
      if (token !== null) void this.releaseLease(key, token)
      throw error
    }
  }

  /**
   * The fresh copy another instance stored between the read that found this entry missing or
   * stale and this instance's lease request (that instance's lease released if this one won it,
   * still held if not), or `undefined`. Without this read, both would run the factory, one after
   * the other; or the loser would wait to be told of a value already there. A copy counts
   * when it stays fresh longer than `stale`: compared by expiry, not by `storedAt`, which two
   * stores in one millisecond share, and an early (XFetch) refresh starts from an entry still
   * fresh. A fresh GET, not a shared one: a read in flight may have started before that store.
   */
  async #storedSince(rkey: string, stale: StoredEntry | undefined): Promise<StoredEntry | undefined> {
    const current = await this.#fetch(rkey)
    if (current === undefined || Date.now() >= current.freshUntil) return undefined
    return stale === undefined || current.freshUntil > stale.freshUntil ? current : undefined
  }

  /** Stores a factory result; failures never reach the caller (they are reported as events). */
  async #storeComputed<T>(
    key: string,
    rkey: string,
    value: T,
    policy: Policy<T>,
    snapshot: number[],
    computeMs: number,
    since: InvalidationMark,
  ): Promise<void> {
    try {
      const ttl = typeof policy.ttl === 'function' ? policy.ttl(value) : policy.ttl
      if (ttl <= 0) {
        this.#bypass('ttl-zero')
        return
      }
      const encoded = encode(value, { compressAbove: policy.compressAbove })
      await this.#storeValue(key, rkey, encoded, ttl, policy, snapshot, computeMs, value, since)
    } catch (error) {
      if (isConnectionError(error)) this.#bypass('redis-unavailable')
      else {
        if (error instanceof CodecError) this.#bypass('not-encodable')
        this.#kit.events.emit('cache:error', { cache: this.name, key, error: error as Error })
      }
    }
  }

  async #storeValue<T>(
    key: string,
    rkey: string,
    encoded: Buffer,
    ttlMs: number,
    policy: Policy<T>,
    snapshot: readonly number[] | undefined,
    computeMs: number,
    value: unknown,
    since?: InvalidationMark,
  ): Promise<boolean> {
    if (encoded.length > policy.maxSize) {
      this.#bypass('too-large')
      return false
    }
    const versions = snapshot ?? (policy.tags.length > 0 ? await this.#core.tags.current(policy.tags) : [])
    const fresh =
      policy.jitter > 0 ? Math.max(1, Math.round(ttlMs * (1 - policy.jitter * Math.random()))) : ttlMs
    const now = Date.now()
    return this.#write(
      key,
      rkey,
      {
        value: encoded,
        storedAt: now,
        freshUntil: now + fresh,
        staleUntil: now + fresh + Math.max(policy.graceMs, policy.staleIfErrorMs),
        tags: [...policy.tags],
        tagVersions: [...versions],
        computeMs,
        decoded: undefined,
        checkedUntil: 0,
      },
      { value },
      since,
    )
  }

  /**
   * Writes an entry to Redis and memory and tells the other instances. With `since` (a mark taken
   * before the value was computed) it is skipped when this instance learned after the mark that
   * the key was deleted, its namespace cleared or one of its tags invalidated, taken back when it
   * learns so while the write is on its way, and kept in mind for news arriving later.
   */
  async #write(
    key: string,
    rkey: string,
    entry: StoredEntry,
    decoded: { value: unknown } | undefined,
    since?: InvalidationMark,
  ): Promise<boolean> {
    const log = this.#core.invalidations
    if (since !== undefined && log.changedSince(since, rkey, entry.tags)) {
      this.#bypass('invalidated')
      return false
    }
    const packed = packEntry(entry)
    const identity = entryIdentity(packed)
    const px = Math.max(1, Math.ceil(entry.staleUntil - Date.now()))
    await this.#kit.hub.exec((redis) => redis.set(rkey, packed, 'PX', px))
    this.#core.dropKey(rkey, identity)
    const until = this.#memory ? this.#core.tags.knownUntil(entry.tags, entry.tagVersions) : 0
    if (this.#memory && until > Date.now()) {
      const item: MemoryItem = unpackEntry(packed) as MemoryItem
      item.checkedUntil = until
      // The decoded value is the caller's object: later hits share it (documented: read-only).
      if (decoded) item.decoded = decoded
      this.#memory.set(rkey, item)
    }
    this.#core.wake(rkey)
    void this.#core.bus.publish({ i: this.#core.bus.id, t: 'keys', k: [rkey], e: identity })
    if (this.#kit.events.has('cache:store')) {
      this.#kit.events.emit('cache:store', { cache: this.name, key, bytes: packed.length })
    }
    if (since === undefined) return true
    // Learned while the write was on its way: take it back. Later news finds it in the log.
    if (log.changedSince(since, rkey, entry.tags)) {
      this.#core.undo([rkey])
      this.#bypass('invalidated')
      return false
    }
    log.remember(rkey, entry.tags, entry.tagVersions)
    return true
  }

  /** Refreshes in the background, once per key in this process and (lease) across processes. */
  #refresh<T>(
    key: string,
    rkey: string,
    factory: (context: FactoryContext) => T | Promise<T>,
    options: GetOrSetOptions<T>,
    entry: StoredEntry,
  ): void {
    // Its own flight key: a foreground miss must never join a refresh that may resolve to nothing.
    const flight = `${rkey}#refresh`
    const leaseMs = this.options.leaseMs
    if (this.#core.flights.has(flight, leaseMs)) return
    this.#core.flights
      .run(
        flight,
        () => this.#compute(key, rkey, factory, this.#policy(options), entry, true, false),
        leaseMs,
      )
      .catch((error: unknown) => {
        this.#kit.events.emit('cache:error', { cache: this.name, key, error: error as Error })
      })
  }
}

function parentBase(o: ResolvedCacheEngineOptions): CacheEngineOptions {
  return {
    l1: o.l1,
    ttl: o.ttlMs,
    grace: o.graceMs,
    staleIfError: o.staleIfErrorMs,
    jitter: o.jitter,
    maxSize: o.maxSize,
    compressAbove: o.compressAbove,
    lease: o.leaseMs,
    wait: o.waitMs,
    tagCacheTtl: o.tagCacheTtlMs,
  }
}

/** XFetch (Vattani et al.): refresh early with a probability rising as expiry nears. */
function earlyRefresh(entry: StoredEntry, now: number, xfetch: boolean | number): boolean {
  const beta = xfetch === true ? 1 : Number(xfetch)
  if (!(beta > 0)) return false
  const delta = Math.max(entry.computeMs, 1)
  return now - delta * beta * Math.log(Math.random()) >= entry.freshUntil
}

function sameTags(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((tag, i) => tag === b[i])
}
