import { randomBytes } from 'node:crypto'
import { IncomingMessage, ServerResponse } from 'node:http'
import { Socket } from 'node:net'
import type { Application, NextFunction, Request, RequestHandler, Response } from 'express'
import type { CacheEngine, InvalidationMark, RawEntry } from '../src/cache/index.js'
import {
  type Captured,
  captureResponse,
  changedOnTheWay,
  currentAge,
  decideStore,
  decodeEntry,
  encodeResponse,
  encodeVaryMarker,
  evaluate,
  type FreshnessOptions,
  type HeaderMap,
  hash,
  headerText,
  isValidHost,
  isValidScheme,
  NOT_MODIFIED_HEADERS,
  notModified,
  onlyIfCached,
  type QueryKeyOptions,
  type ResolvedQueryKey,
  type ResponseEntry,
  requestNoStore,
  splitTarget,
  strongEtag,
  urlKey,
  type VaryMarker,
  variantId,
} from '../src/http-cache/index.js'
import { ConfigError, type Duration, isConnectionError, parseDuration, type Redkit } from '../src/index.js'
import { sendProblem } from './problem.js'

/** Options of {@link responseCache}. */
export interface ResponseCacheOptions {
  /**
   * Freshness lifetime for responses that state none (no `s-maxage`, `max-age` or `Expires`).
   * The app's `Cache-Control` header is never rewritten.
   * @default '1m'
   */
  ttl?: Duration
  /**
   * Use `ttl` even for responses that state their own freshness (still never stores what
   * `no-store`, `private` or `Set-Cookie` forbid, and still revalidates `no-cache`).
   * @default false
   */
  forceTtl?: boolean
  /**
   * Serve a stale copy this long past its freshness while one background refresh runs, for
   * responses without a `stale-while-revalidate` directive, and never for those with `s-maxage`
   * (RFC 9111 §5.2.2.10: for a shared cache it means proxy-revalidate).
   * @default 0
   */
  staleWhileRevalidate?: Duration
  /**
   * Serve a stale copy this long past its freshness when the origin answers 5xx or fails, for
   * responses without a `stale-if-error` directive, and never for those with `s-maxage`.
   * @default 0
   */
  staleIfError?: Duration
  /**
   * How long a stale entry that has a validator (`ETag` / `Last-Modified`) is kept, so it can be
   * revalidated with a conditional request instead of fetched again.
   * @default '5m'
   */
  keepStale?: Duration
  /**
   * Largest body cached, in bytes; bigger responses pass through uncached.
   * @default 1048576
   */
  maxSize?: number
  /**
   * Name of the header telling how the response was served (`HIT`, `MISS`, `STALE`, `BYPASS`);
   * `false` sends none.
   * @default 'X-Cache'
   */
  statusHeader?: string | false
  /**
   * Replaces the URL part of the key (method, scheme, host, path, query). `Vary` still selects
   * variants on top of it. Return `undefined` to leave the request uncached.
   * @default undefined (method + scheme + host + path + query)
   */
  key?: (req: Request) => string | undefined
  /**
   * How the query string counts in the key: `{ sort, include, exclude }`.
   * @default { sort: false, include: [], exclude: [] }
   */
  query?: QueryKeyOptions
  /**
   * Tags for the stored response (purged together with `kit.cache.invalidateTags`), in addition
   * to those of the tag headers.
   * @default undefined
   */
  tags?: (req: Request, res: Response) => string[] | undefined
  /**
   * Response headers whose values are tags (`Surrogate-Key` space-separated, `Cache-Tag`
   * comma-separated). They are removed before the response leaves.
   * @default ['surrogate-key', 'cache-tag']
   */
  tagHeaders?: string[]
  /**
   * Add a strong `ETag` (hash of the body) to stored responses that have none.
   * @default true
   */
  etag?: boolean
  /**
   * Invalidate the target URI and its `Location` / `Content-Location` after a successful POST,
   * PUT, PATCH or DELETE that passes through this middleware (RFC 9111 §4.4).
   * @default true
   */
  invalidateOnUnsafe?: boolean
  /**
   * Lifetime of the cross-process lease one instance takes to fetch a missing response for all.
   * @default '10s'
   */
  lease?: Duration
  /**
   * How long concurrent requests for a missing response wait for the one fetching it before they
   * go to the origin themselves.
   * @default '3s'
   */
  wait?: Duration
  /**
   * In-process tier in front of Redis; `false` reads every hit from Redis.
   * @default true (the kit cache's memory tier)
   */
  l1?: boolean
  /**
   * Cache namespace: keys under `prefix:cache:<namespace>:`, events with `cache: namespace`.
   * @default 'response'
   */
  namespace?: string
}

interface Resolved {
  freshness: FreshnessOptions
  maxSize: number
  statusHeader: string | false
  key: ((req: Request) => string | undefined) | undefined
  query: ResolvedQueryKey
  tags: ((req: Request, res: Response) => string[] | undefined) | undefined
  tagHeaders: string[]
  etag: boolean
  invalidateOnUnsafe: boolean
  leaseMs: number
  waitMs: number
  l1: boolean
  namespace: string
}

const RESPONSE_CACHE_DEFAULTS: Required<Omit<ResponseCacheOptions, 'key' | 'tags' | 'query'>> = {
  ttl: '1m',
  forceTtl: false,
  staleWhileRevalidate: 0,
  staleIfError: 0,
  keepStale: '5m',
  maxSize: 1024 * 1024,
  statusHeader: 'X-Cache',
  tagHeaders: ['surrogate-key', 'cache-tag'],
  etag: true,
  invalidateOnUnsafe: true,
  lease: '10s',
  wait: '3s',
  l1: true,
  namespace: 'response',
}

function resolveResponseCacheOptions(options: ResponseCacheOptions): Resolved {
  const o = {
    ...RESPONSE_CACHE_DEFAULTS,
    ...Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)),
  } as Required<Omit<ResponseCacheOptions, 'key' | 'tags' | 'query'>> &
    Pick<ResponseCacheOptions, 'key' | 'tags' | 'query'>
  const ttlMs = parseDuration(o.ttl, 'responseCache.ttl')
  if (!Number.isInteger(o.maxSize) || o.maxSize < 1) {
    throw new ConfigError(
      'responseCache.maxSize',
      `is ${String(o.maxSize)}`,
      'write a number of bytes, e.g. 1048576',
    )
  }
  if (o.statusHeader !== false && (typeof o.statusHeader !== 'string' || !/^[\w-]+$/.test(o.statusHeader))) {
    throw new ConfigError(
      'responseCache.statusHeader',
      `is ${JSON.stringify(o.statusHeader)}`,
      "write 'X-Cache' or false",
    )
  }
  for (const name of ['key', 'tags'] as const) {
    if (o[name] !== undefined && typeof o[name] !== 'function') {
      throw new ConfigError(`responseCache.${name}`, 'must be a function', `write ${name}: (req) => ...`)
    }
  }
  for (const name of ['forceTtl', 'etag', 'invalidateOnUnsafe', 'l1'] as const) {
    if (typeof o[name] !== 'boolean')
      throw new ConfigError(`responseCache.${name}`, 'must be a boolean', 'write true or false')
  }
  if (!Array.isArray(o.tagHeaders) || o.tagHeaders.some((h) => typeof h !== 'string')) {
    throw new ConfigError(
      'responseCache.tagHeaders',
      'must be an array of header names',
      "write ['surrogate-key']",
    )
  }
  const query = o.query ?? {}
  for (const field of ['include', 'exclude'] as const) {
    const list = query[field]
    if (list !== undefined && (!Array.isArray(list) || list.some((n) => typeof n !== 'string'))) {
      throw new ConfigError(
        `responseCache.query.${field}`,
        'must be an array of parameter names',
        "write ['page']",
      )
    }
  }
  const tagHeaders = o.tagHeaders.map((h) => h.toLowerCase())
  return {
    freshness: {
      ttlMs,
      forceTtl: o.forceTtl,
      staleWhileRevalidateMs: parseDuration(o.staleWhileRevalidate, 'responseCache.staleWhileRevalidate'),
      staleIfErrorMs: parseDuration(o.staleIfError, 'responseCache.staleIfError'),
      keepStaleMs: parseDuration(o.keepStale, 'responseCache.keepStale'),
      tagHeaders,
    },
    maxSize: o.maxSize,
    statusHeader: o.statusHeader,
    key: o.key,
    query: {
      sort: query.sort === true,
      include: new Set(query.include ?? []),
      exclude: new Set(query.exclude ?? []),
    },
    tags: o.tags,
    tagHeaders,
    etag: o.etag,
    invalidateOnUnsafe: o.invalidateOnUnsafe,
    leaseMs: Math.max(1, parseDuration(o.lease, 'responseCache.lease')),
    waitMs: parseDuration(o.wait, 'responseCache.wait'),
    l1: o.l1,
    namespace: o.namespace,
  }
}

/** The middleware returned by {@link responseCache}, with purge helpers bound to its key scheme. */
export interface ResponseCacheMiddleware extends RequestHandler {
  /**
   * Removes the stored response (every variant) of a URL on every instance, for http and https
   * alike. `url` is absolute (`https://shop.example/products/1?x=1`).
   */
  purge(url: string): Promise<void>
  /** Invalidates every stored response carrying one of `tags`. */
  invalidateTags(tags: string[]): Promise<void>
  /** Removes every stored response of this cache's namespace (SCAN, never KEYS). */
  clear(): Promise<number>
  /** The cache namespace the middleware stores into. */
  readonly store: CacheEngine
}

/** Marks the synthetic request of a background refresh. */
const REFRESH = Symbol('redkit.responseCache.refresh')
const UNSAFE = new Set(['POST', 'PUT', 'PATCH', 'DELETE'])
const CONDITIONALS = ['if-none-match', 'if-modified-since', 'if-match', 'if-unmodified-since', 'if-range']
type Label = 'HIT' | 'MISS' | 'STALE' | 'BYPASS'

interface Lookup {
  entry: ResponseEntry | undefined
  /** Where the entry came from (meaningful when `entry` is set). */
  layer: 'l1' | 'l2'
  /** Where this request's response is (or would be) stored. */
  key: string
  primary: string
  marker: VaryMarker | undefined
  /**
   * Taken before the lookup: a response stored from it is dropped when the URL was purged or a
   * tag of it invalidated since (what the origin read may predate that), and a purged Vary
   * marker is never written again with the generation this lookup found.
   */
  mark: InvalidationMark
}

const stores = new WeakMap<Redkit, Map<string, CacheEngine>>()

function storeFor(kit: Redkit, namespace: string, l1: boolean): CacheEngine {
  let byName = stores.get(kit)
  if (!byName) {
    byName = new Map()
    stores.set(kit, byName)
  }
  const id = `${namespace}:${l1}`
  let store = byName.get(id)
  if (!store) {
    store = l1 ? kit.cache.namespace(namespace) : kit.cache.namespace(namespace, { l1: false })
    byName.set(id, store)
  }
  return store
}

/**
 * A shared HTTP cache (RFC 9111) in front of the routes it is mounted on: stores what may be
 * stored, honours request and response `Cache-Control`, `Vary`, validators (304s), stale serving
 * with one background refresh, stampede protection across instances, tags, and fails open
 * (`X-Cache: BYPASS`) when Redis is unavailable.
 *
 * Mount it with `app.use()` (not only `app.get()`) so that successful unsafe requests also
 * invalidate what they change.
 *
 * @example
 * const cache = responseCache(kit, { ttl: '10m', staleWhileRevalidate: '1m' })
 * app.use('/api', cache)
 * app.get('/api/products/:id', (req, res) => res.json(await products.get(req.params.id)))
 * await cache.purge('https://shop.example/api/products/42')
 */
export function responseCache(kit: Redkit, options: ResponseCacheOptions = {}): ResponseCacheMiddleware {
  const o = resolveResponseCacheOptions(options)
  const store = storeFor(kit, o.namespace, o.l1)
  const events = kit.events
  const cacheName = store.name
  const statusHeader = o.statusHeader
  // Entry objects already seen: a second sighting of the same object came from memory.
  const seen = new WeakSet<RawEntry>()

  const emitBypass = (reason: string) => {
    if (events.has('cache:bypass')) events.emit('cache:bypass', { cache: cacheName, reason })
  }

  function primaryKey(req: Request, site: Site): string | undefined {
    if (o.key) {
      const custom = o.key(req)
      if (custom === undefined) return undefined
      const text = String(custom)
      return text.length > 200 ? `K #${hash(text)}` : `K ${text}`
    }
    const { path, query } = splitTarget(req.originalUrl ?? req.url)
    return urlPrimaryKey(site.scheme, site.host, path, query, o.query)
  }

  async function read(
    key: string,
  ): Promise<{ entry: ResponseEntry | VaryMarker; layer: 'l1' | 'l2' } | undefined> {
    const raw = await store.readEntry(key)
    if (!raw) return undefined
    const entry = decodeEntry(raw.value, o.l1)
    if (!entry) return undefined
    // The engine hands out the same object while it sits in memory: a second sighting is an L1 hit.
    let layer: 'l1' | 'l2' = 'l2'
    if (o.l1) {
      if (seen.has(raw)) layer = 'l1'
      else seen.add(raw)
    }
    return { entry, layer }
  }

  async function lookup(primary: string, headers: HeaderMap): Promise<Lookup> {
    const mark = store.invalidationMark()
    const first = await read(primary)
    if (first?.entry.kind !== 'vary') {
      return {
        entry: first?.entry,
        layer: first?.layer ?? 'l2',
        key: primary,
        primary,
        marker: undefined,
        mark,
      }
    }
    const marker = first.entry
    const key = `${primary} #${marker.generation} ${variantId(marker.fields, headers)}`
    const second = await read(key)
    const entry = second?.entry.kind === 'response' ? second.entry : undefined
    return { entry, layer: second?.layer ?? 'l2', key, primary, marker, mark }
  }

  function emitHit(lk: Lookup): void {
    if (events.has('cache:hit')) events.emit('cache:hit', { cache: cacheName, key: lk.key, layer: lk.layer })
  }

  function emitStale(lk: Lookup): void {
    if (events.has('cache:stale')) events.emit('cache:stale', { cache: cacheName, key: lk.key })
  }

  function setLabel(res: Response, label: Label): void {
    if (statusHeader && !res.headersSent) res.setHeader(statusHeader, label)
  }

  /** Answers from a stored response (full, HEAD, or 304 for the request's validators). */
  function serve(req: Request, res: Response, entry: ResponseEntry, age: number, label: Label): void {
    const meta = entry.meta
    if (res.headersSent) return void res.end()
    if (notModified(meta, req.headers)) {
      res.statusCode = 304
      for (const [name, value] of meta.headers) if (NOT_MODIFIED_HEADERS.has(name)) res.setHeader(name, value)
    } else {
      res.statusCode = meta.status
      for (const [name, value] of meta.headers) res.setHeader(name, value)
      if (meta.status !== 204) res.setHeader('Content-Length', entry.body.length)
    }
    // RFC 9111 §5.1: a cache sends Age with every response served from storage.
    res.setHeader('Age', String(Math.floor(age)))
    if (statusHeader) res.setHeader(statusHeader, label)
    if (res.statusCode === 304 || req.method === 'HEAD' || meta.status === 204) res.end()
    else res.end(entry.body)
  }

  function tagsFor(req: Request, res: Response, headers: HeaderMap): string[] {
    const tags = new Set<string>()
    if (o.tags)
      for (const tag of o.tags(req, res) ?? []) if (typeof tag === 'string' && tag !== '') tags.add(tag)
    for (const name of o.tagHeaders) {
      const value = headerText(headers[name])
      if (!value) continue
      // Surrogate-Key lists are space-separated, Cache-Tag lists comma-separated.
      for (const tag of value.split(name === 'surrogate-key' ? /\s+/ : /\s*,\s*/)) {
        const t = tag.trim()
        if (t !== '' && t.length <= 256 && tags.size < 64) tags.add(t)
      }
    }
    return [...tags]
  }

  /** Stores a captured response; never throws (a failed write only means a later miss). */
  async function storeCaptured(req: Request, res: Response, lk: Lookup, captured: Captured): Promise<void> {
    if (!captured.body || captured.status === 304) return
    if (changedOnTheWay(captured)) return
    const tags = tagsFor(req, res, captured.headers)
    const decision = decideStore(
      { method: 'GET', url: req.originalUrl ?? req.url, headers: req.headers },
      { status: captured.status, headers: captured.headers },
      tags,
      o.freshness,
    )
    if (!decision.store) return
    const { meta } = decision
    if (o.etag && meta.etag === undefined && meta.status === 200) {
      meta.etag = strongEtag(captured.body)
      meta.headers.push(['etag', meta.etag])
    }
    await write(lk, req.headers, meta, captured.body, decision.freshMs, decision.staleMs)
  }

  async function write(
    lk: Lookup,
    headers: HeaderMap,
    meta: ResponseEntry['meta'],
    body: Buffer,
    freshMs: number,
    staleMs: number,
  ): Promise<void> {
    try {
      const value = encodeResponse(meta, body)
      const since = lk.mark
      if (!meta.vary) {
        await store.writeEntry(lk.primary, value, { freshMs, staleMs, tags: meta.tags, since })
        return
      }
      // One entry per variant, reached through a marker naming the selecting fields.
      const reuse = lk.marker && sameList(lk.marker.fields, meta.vary) ? lk.marker.generation : undefined
      const generation = reuse ?? randomBytes(6).toString('base64url')
      const key = `${lk.primary} #${generation} ${variantId(meta.vary, headers)}`
      // Marker first: a reader that finds the marker before the variant just misses. Not written
      // when the URL was purged since the lookup: that would bring back the purged generation.
      const marked = await store.writeEntry(lk.primary, encodeVaryMarker(meta.vary, generation), {
        freshMs: freshMs + staleMs,
        staleMs: 0,
        since,
      })
      if (marked) await store.writeEntry(key, value, { freshMs, staleMs, tags: meta.tags, since })
    } catch (error) {
      if (!isConnectionError(error))
        kit.events.emit('error', { error: error as Error, connection: 'response-cache' })
    }
  }

  /**
   * Runs the origin for this request while recording what it sends, then stores it. With a
   * stale `entry`, the request is made conditional and a 304 refreshes the stored copy; with
   * `staleIfError`, a 5xx is replaced by the stale copy.
   */
  function origin(
    req: Request,
    res: Response,
    next: NextFunction,
    lk: Lookup | undefined,
    mode: { label: Label; stale?: ResponseEntry; staleIfError?: boolean; store: boolean; detached?: boolean },
  ): Promise<void> {
    const stale = mode.stale
    const saved: Array<[string, string | string[] | undefined]> = []
    if (stale && (stale.meta.etag || stale.meta.lastModified)) {
      for (const name of CONDITIONALS) saved.push([name, req.headers[name]])
      for (const name of CONDITIONALS) delete req.headers[name]
      if (stale.meta.etag) req.headers['if-none-match'] = stale.meta.etag
      if (stale.meta.lastModified) req.headers['if-modified-since'] = stale.meta.lastModified
    }
    const restore = () => {
      for (const [name, value] of saved) {
        if (value === undefined) delete req.headers[name]
        else req.headers[name] = value
      }
    }
    const keepBody = mode.store && req.method === 'GET' && lk !== undefined
    // Settled at the head when nothing will be stored, so that the lease and the flight are let
    // go then, not when a long (or endless: an event stream) body ends.
    let headDecided!: () => void
    const unstorable = new Promise<void>((resolve) => {
      headDecided = resolve
    })
    const { done } = captureResponse(res, {
      maxSize: o.maxSize,
      keepBody,
      detached: mode.detached,
      strip: o.tagHeaders,
      add: statusHeader ? { [statusHeader]: mode.label } : undefined,
      holdBack: stale
        ? (status) => (saved.length > 0 && status === 304) || (mode.staleIfError === true && status >= 500)
        : undefined,
      storable: (status, headers) => {
        const storable = keepBody && storableHead(req, status, headers)
        if (!storable) headDecided()
        return storable
      },
      onSingleChunk:
        o.etag && keepBody
          ? (chunk) => {
              // Only on responses that may be stored: others leave exactly as the app sent them.
              if (res.statusCode !== 200 || res.hasHeader('etag') || res.hasHeader('set-cookie')) return
              if (/no-store|private/i.test(String(res.getHeader('cache-control') ?? ''))) return
              res.setHeader('ETag', strongEtag(chunk))
            }
          : undefined,
    })
    const finished = done.then(async (captured) => {
      restore()
      if (!captured) return
      if (captured.held && stale && lk) {
        if (captured.status === 304) {
          let refreshed = stale
          try {
            refreshed = await refreshFrom304(req, res, lk, stale, captured)
          } catch (error) {
            // The client is still waiting for an answer: the validated copy is a correct one.
            kit.events.emit('error', { error: error as Error, connection: 'response-cache' })
          }
          if (!mode.detached)
            serve(req, res, refreshed, refreshed === stale ? currentAge(stale.meta) : 0, 'HIT')
        } else if (!mode.detached) {
          // RFC 5861 §4: the origin failed; the stale copy stands in for it.
          emitStale(lk)
          serve(req, res, stale, currentAge(stale.meta), 'STALE')
        }
        return
      }
      if (!keepBody) {
        if (captured.body === undefined && mode.store && req.method === 'GET') emitBypass('too-large')
        return
      }
      if (lk) await storeCaptured(req, res, lk, captured)
    })
    next()
    const result = finished.catch((error: unknown) => {
      kit.events.emit('error', { error: error as Error, connection: 'response-cache' })
    })
    return Promise.race([result, unstorable])
  }

  /** False when a response with this head cannot be stored whatever its body turns out to be. */
  function storableHead(req: Request, status: number, headers: HeaderMap): boolean {
    if (status === 304) return false
    const length = Number(headers['content-length'])
    if (Number.isFinite(length) && length > o.maxSize) return false
    return decideStore(
      { method: 'GET', url: req.originalUrl ?? req.url, headers: req.headers },
      { status, headers },
      [],
      o.freshness,
    ).store
  }

  /** RFC 9111 §4.3.4: a 304 freshens the stored response with the header fields it carries. */
  async function refreshFrom304(
    req: Request,
    res: Response,
    lk: Lookup,
    stale: ResponseEntry,
    captured: Captured,
  ): Promise<ResponseEntry> {
    const headers: HeaderMap = {}
    for (const [name, value] of stale.meta.headers) headers[name] = value
    for (const [name, value] of Object.entries(captured.headers)) {
      if (value === undefined || name === 'content-length' || name === 'content-encoding') continue
      if (name === 'transfer-encoding' || name === 'content-range' || name === 'set-cookie') continue
      headers[name] = value
    }
    if (captured.headers.date === undefined) delete headers.date
    const decision = decideStore(
      { method: 'GET', url: req.originalUrl ?? req.url, headers: req.headers },
      { status: stale.meta.status, headers },
      tagsFor(req, res, captured.headers).concat(stale.meta.tags),
      o.freshness,
    )
    if (!decision.store) {
      // Not storable any more: answer this request from the validated copy, keep nothing.
      await store.deleteKeys([lk.key]).catch(() => undefined)
      return stale
    }
    decision.meta.tags = [...new Set(decision.meta.tags)]
    if (decision.meta.etag === undefined && stale.meta.etag !== undefined) {
      decision.meta.etag = stale.meta.etag
      decision.meta.headers.push(['etag', stale.meta.etag])
    }
    await write(lk, req.headers, decision.meta, stale.body, decision.freshMs, decision.staleMs)
    return { kind: 'response', meta: decision.meta, body: stale.body }
  }

  /**
   * One origin call for everyone: in-process single flight, then a Redis lease between
   * instances; those that lose wait (bounded) for the winner's entry, then serve it or go to the
   * origin themselves.
   */
  async function missOrRevalidate(
    req: Request,
    res: Response,
    next: NextFunction,
    lk: Lookup,
    mode: { label: Label; stale?: ResponseEntry; staleIfError?: boolean; store: boolean },
  ): Promise<void> {
    let led = false
    const flight = store.singleFlight(lk.key, async () => {
      led = true
      let token: string | null = null
      try {
        token = await store.acquireLease(lk.key, o.leaseMs)
      } catch {
        token = null
        // Redis went away between the lookup and now: fail open for this request.
        return withDeadline(origin(req, res, next, lk, { ...mode, label: 'BYPASS', store: false }), o.leaseMs)
      }
      if (token === null) {
        // Stops early when the holder lets its lease go with nothing stored (not storable).
        const arrived = await store.waitForEntry(lk.key, o.waitMs, { leaseOf: lk.key }).catch(() => undefined)
        if (arrived && (await answerFromStore(req, res, lk.primary, false))) return
        // Bounded like the holder's own call: a stream or long poll must not hold the flight.
        return withDeadline(origin(req, res, next, lk, mode), o.leaseMs)
      }
      try {
        // Another instance may have stored the response and released its lease between this
        // one's lookup and its lease request: serve that rather than call the origin again.
        if (await answerFromStore(req, res, lk.primary, false).catch(() => false)) return
        // A handler that never answers must not hold the flight (and its followers) forever.
        await withDeadline(origin(req, res, next, lk, mode), o.leaseMs)
      } finally {
        void store.releaseLease(lk.key, token)
      }
    })
    if (led) return flight
    // Followers: wait for the leader (bounded), then read what it stored.
    await withDeadline(
      flight.catch(() => undefined),
      o.waitMs,
    )
    try {
      if (await answerFromStore(req, res, lk.primary, false)) return
    } catch {
      // fall through to the origin
    }
    return origin(req, res, next, lk, { ...mode, store: mode.store })
  }

  /** Serves the stored response when it fully satisfies the request; false otherwise. */
  async function answerFromStore(
    req: Request,
    res: Response,
    primary: string,
    allowStale: boolean,
  ): Promise<boolean> {
    const lk = await lookup(primary, req.headers)
    if (!lk.entry) return false
    const ev = evaluate(lk.entry.meta, req.headers)
    if (ev.use === 'fresh' || (allowStale && ev.use === 'stale-allowed')) {
      emitHit(lk)
      serve(req, res, lk.entry, ev.age, 'HIT')
      return true
    }
    return false
  }

  /** Re-runs the app for this URL on a response object with no client, and stores the result. */
  function refreshInBackground(req: Request, lk: Lookup): void {
    void store
      .singleFlight(`refresh ${lk.key}`, async () => {
        let token: string | null = null
        try {
          token = await store.acquireLease(`refresh ${lk.key}`, o.leaseMs)
        } catch {
          return
        }
        // Another instance refreshes it: exactly one refresh for the whole deployment.
        if (token === null) return
        try {
          await dispatchRefresh(req, o.leaseMs)
        } finally {
          void store.releaseLease(`refresh ${lk.key}`, token)
        }
      })
      .catch((error: unknown) =>
        kit.events.emit('error', { error: error as Error, connection: 'response-cache' }),
      )
  }

  async function invalidateUnsafe(req: Request, res: Response, site: Site): Promise<void> {
    // RFC 9111 §4.4: a non-error response to an unsafe method invalidates the target URI, and
    // the Location / Content-Location URIs when they have the same host.
    if (res.statusCode < 200 || res.statusCode >= 400) return
    const { host } = site
    const target = req.originalUrl ?? req.url
    const keys = new Set<string>()
    if (o.key) {
      const custom = primaryKey(req, site)
      if (custom) keys.add(custom)
    } else {
      const { path, query } = splitTarget(target)
      for (const key of purgeKeys(site.scheme, host, path, query, o.query)) keys.add(key)
      const base = `${site.scheme}://${host || 'localhost'}${target.startsWith('/') ? target : `/${target}`}`
      for (const name of ['location', 'content-location']) {
        const value = headerText(res.getHeader(name) as string | string[] | number | undefined)
        if (!value || value.length > 8192) continue
        try {
          const url = new URL(value, base)
          if (url.host.toLowerCase() !== host && url.hostname.toLowerCase() !== host) continue
          for (const key of purgeKeys(site.scheme, host, url.pathname, url.search.slice(1), o.query))
            keys.add(key)
        } catch {
          // not a URI: nothing to invalidate
        }
      }
    }
    await store.deleteKeys([...keys])
  }

  const middleware = async function responseCacheMiddleware(req: Request, res: Response, next: NextFunction) {
    try {
      const method = req.method
      const refreshDone = (req as unknown as Record<symbol, (() => void) | undefined>)[REFRESH]
      if (refreshDone) {
        const site = requestSite(req)
        const primary = site ? primaryKey(req, site) : undefined
        const lk = primary ? await lookup(primary, req.headers).catch(() => undefined) : undefined
        // Gone, or already refreshed by another instance since this one served the stale copy.
        if (!lk || (lk.entry && evaluate(lk.entry.meta, req.headers).use === 'fresh')) {
          refreshDone()
          return
        }
        // Revalidates conditionally when the stale copy has a validator (a 304 costs no body).
        await origin(req, res, next, lk, { label: 'MISS', store: true, detached: true, stale: lk.entry })
        refreshDone()
        return
      }
      const site = requestSite(req)
      if (!site) {
        // Never part of a key: it could name another URL's entry (RFC 3986 §3.2.2).
        emitBypass('invalid-host')
        if (method === 'GET' || method === 'HEAD') setLabel(res, 'BYPASS')
        return next()
      }
      if (method !== 'GET' && method !== 'HEAD') {
        if (o.invalidateOnUnsafe && UNSAFE.has(method)) {
          res.once('finish', () => {
            invalidateUnsafe(req, res, site).catch((error: unknown) => {
              if (!isConnectionError(error)) {
                kit.events.emit('error', { error: error as Error, connection: 'response-cache' })
              }
            })
          })
        }
        return next()
      }
      const primary = primaryKey(req, site)
      if (primary === undefined) return next()
      let lk: Lookup
      try {
        lk = await lookup(primary, req.headers)
      } catch (error) {
        // Redis unavailable (or anything else going wrong in the store): fail open.
        emitBypass(isConnectionError(error) ? 'redis-unavailable' : 'store-error')
        if (onlyIfCached(req.headers)) return gatewayTimeout(res)
        setLabel(res, 'BYPASS')
        return next()
      }
      const entry = lk.entry
      const noStore = requestNoStore(req.headers)
      if (entry) {
        const ev = evaluate(entry.meta, req.headers)
        if (ev.use === 'fresh') {
          emitHit(lk)
          return serve(req, res, entry, ev.age, 'HIT')
        }
        if (ev.use === 'stale-allowed') {
          emitStale(lk)
          return serve(req, res, entry, ev.age, 'STALE')
        }
        if (ev.use === 'stale-while-revalidate') {
          emitStale(lk)
          serve(req, res, entry, ev.age, 'STALE')
          refreshInBackground(req, lk)
          return
        }
        if (onlyIfCached(req.headers)) return gatewayTimeout(res)
        if (ev.use === 'none') {
          emitBypass(ev.reason)
          return origin(req, res, next, lk, { label: 'BYPASS', store: !noStore })
        }
        // Stored but not usable as is: it goes to the origin (conditionally when it can).
        if (events.has('cache:miss')) events.emit('cache:miss', { cache: cacheName, key: lk.key })
        if (method === 'HEAD') return origin(req, res, next, undefined, { label: 'MISS', store: false })
        return missOrRevalidate(req, res, next, lk, {
          label: 'MISS',
          stale: entry,
          staleIfError: ev.staleIfError,
          store: !noStore,
        })
      }
      if (events.has('cache:miss')) events.emit('cache:miss', { cache: cacheName, key: lk.key })
      // RFC 9111 §5.2.1.7: only-if-cached with nothing stored is answered 504.
      if (onlyIfCached(req.headers)) return gatewayTimeout(res)
      if (method === 'HEAD') return origin(req, res, next, undefined, { label: 'MISS', store: false })
      return missOrRevalidate(req, res, next, lk, { label: 'MISS', store: !noStore })
    } catch (error) {
      if (res.headersSent) return
      emitBypass('error')
      setLabel(res, 'BYPASS')
      next(isConnectionError(error) ? undefined : error)
    }
  }

  function gatewayTimeout(res: Response): void {
    setLabel(res, 'MISS')
    sendProblem(res, {
      status: 504,
      title: 'Not in cache',
      detail: 'The request asked for a stored response only (only-if-cached) and none is available.',
    })
  }

  const handler = middleware as unknown as ResponseCacheMiddleware
  Object.defineProperty(handler, 'store', { value: store })
  handler.purge = async (url: string) => {
    const parsed = parseUrl(url)
    if (o.key) {
      throw new ConfigError(
        'purge',
        'cannot rebuild keys made by a custom `key` option from a URL',
        'tag the responses (tags option or Surrogate-Key) and call invalidateTags()',
      )
    }
    if (parsed.scheme === undefined) {
      throw new ConfigError(
        'purge url',
        `is not absolute: ${JSON.stringify(url.slice(0, 100))}`,
        "write 'https://host/path?query'",
      )
    }
    await store.deleteKeys(purgeKeys(parsed.scheme, parsed.host, parsed.path, parsed.query, o.query))
  }
  handler.invalidateTags = (tags: string[]) => store.invalidateTags(tags)
  handler.clear = () => store.clear()
  return handler
}

/**
 * Removes the stored response (every variant) of `url` from the response cache of `kit`, on every
 * instance, for middlewares using the default key scheme, for http and https alike. `url` is
 * absolute, or a path for responses to requests that had no `Host`.
 *
 * @example
 * await purgeUrl(kit, 'https://shop.example/products/42')
 */
export async function purgeUrl(
  kit: Redkit,
  url: string,
  options: Pick<ResponseCacheOptions, 'query' | 'namespace'> = {},
): Promise<void> {
  const o = resolveResponseCacheOptions(options)
  const parsed = parseUrl(url)
  await storeFor(kit, o.namespace, true).deleteKeys(
    purgeKeys(parsed.scheme, parsed.host, parsed.path, parsed.query, o.query),
  )
}

function parseUrl(url: string): { scheme: string | undefined; host: string; path: string; query: string } {
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(url)) {
    const u = new URL(url)
    return { scheme: u.protocol.slice(0, -1), host: u.hostname, path: u.pathname, query: u.search.slice(1) }
  }
  const { path, query } = splitTarget(url)
  return { scheme: undefined, host: '', path, query }
}

/** Scheme and host a request was made to, as they take part in its key. */
interface Site {
  scheme: string
  host: string
}

/**
 * Scheme and host as Express reports them (`X-Forwarded-Proto` and `X-Forwarded-Host` count only
 * when `trust proxy` allows), or `undefined` when the scheme is not one, or the `Host` field (or
 * the trusted `X-Forwarded-Host`) is not a valid `host[:port]`: `Host: shop.example/api` would
 * otherwise make `GET /42` share the key of `/api/42`, and the app may copy the field into its
 * response (absolute links) that would then be stored for every client.
 */
function requestSite(req: Request): Site | undefined {
  const scheme = req.protocol
  if (typeof scheme !== 'string' || !isValidScheme(scheme)) return undefined
  const host = req.get('host')
  if (host !== undefined && !isValidHost(host)) return undefined
  const forwarded = trustedForwardedHost(req)
  if (forwarded !== undefined && !isValidHost(forwarded)) return undefined
  const hostname = req.hostname
  return { scheme: scheme.toLowerCase(), host: typeof hostname === 'string' ? hostname.toLowerCase() : '' }
}

/** The `X-Forwarded-Host` value Express takes `req.hostname` from (its first), when `trust proxy` trusts the peer. */
function trustedForwardedHost(req: Request): string | undefined {
  const value = req.get('x-forwarded-host')
  if (!value) return undefined
  const trust = req.app?.get('trust proxy fn') as
    | ((address: string | undefined, hop: number) => boolean)
    | undefined
  if (typeof trust !== 'function' || !trust(req.socket?.remoteAddress, 0)) return undefined
  const comma = value.indexOf(',')
  return comma === -1 ? value : value.slice(0, comma).trimEnd()
}

function urlPrimaryKey(
  scheme: string,
  host: string,
  path: string,
  query: string,
  q: ResolvedQueryKey,
): string {
  return `GET ${urlKey(scheme, host, path, query, q)}`
}

/**
 * The keys a purge of one URL removes: http and https are one resource to whoever purges it (a
 * proxy in front may have been reached either way), so both are removed; another scheme alone.
 */
function purgeKeys(
  scheme: string | undefined,
  host: string,
  path: string,
  query: string,
  q: ResolvedQueryKey,
): string[] {
  const schemes =
    scheme === undefined || scheme === 'http' || scheme === 'https' ? ['http', 'https'] : [scheme]
  return schemes.map((s) => urlPrimaryKey(s, host, path, query, q))
}

/** Resolves when `promise` settles or after `ms`, whichever comes first. */
function withDeadline(promise: Promise<void>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined
  return Promise.race([
    promise,
    new Promise<void>((resolve) => {
      timer = setTimeout(resolve, ms)
      timer.unref()
    }),
  ]).finally(() => clearTimeout(timer))
}

function sameList(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i])
}

/**
 * Sends a copy of `req` (GET, same URL and headers, no validators) through the whole app on a
 * response object that has no client, marked so this middleware captures and stores it.
 */
function dispatchRefresh(req: Request, timeoutMs: number): Promise<void> {
  let app = req.app as Application & { parent?: Application }
  while (app?.parent) app = app.parent as Application & { parent?: Application }
  if (!app || typeof (app as unknown as { handle?: unknown }).handle !== 'function') return Promise.resolve()
  const socket = new Socket()
  Object.defineProperty(socket, 'remoteAddress', { value: req.socket?.remoteAddress })
  Object.defineProperty(socket, 'encrypted', { value: (req.socket as { encrypted?: boolean })?.encrypted })
  const fake = new IncomingMessage(socket)
  fake.method = 'GET'
  fake.url = req.originalUrl ?? req.url
  fake.httpVersionMajor = 1
  fake.httpVersionMinor = 1
  fake.httpVersion = '1.1'
  const headers: Record<string, string | string[]> = {}
  for (const [name, value] of Object.entries(req.headers)) {
    if (value === undefined || CONDITIONALS.includes(name) || name === 'cache-control' || name === 'pragma')
      continue
    if (name === 'content-length' || name === 'transfer-encoding') continue
    headers[name] = value
  }
  fake.headers = headers
  fake.rawHeaders = Object.entries(headers).flatMap(([n, v]) =>
    Array.isArray(v) ? v.flatMap((x) => [n, x]) : [n, v],
  )
  fake.push(null)
  const out = new ServerResponse(fake)
  return new Promise<void>((resolve) => {
    const timer = setTimeout(finish, timeoutMs)
    let settled = false
    function finish() {
      if (settled) return
      settled = true
      clearTimeout(timer)
      socket.destroy()
      resolve()
    }
    // The middleware calls this once the refreshed response is stored (or found not storable).
    ;(fake as unknown as Record<symbol, unknown>)[REFRESH] = finish
    try {
      ;(app as unknown as { handle: (q: unknown, s: unknown, cb: () => void) => void }).handle(
        fake,
        out,
        finish,
      )
    } catch {
      finish()
    }
  })
}
