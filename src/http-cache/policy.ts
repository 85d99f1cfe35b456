import CachePolicy from 'http-cache-semantics'
import {
  deltaSeconds,
  type HeaderMap,
  has,
  headerText,
  parseCacheControl,
  parseHttpDate,
} from './cache-control.js'
import type { Captured } from './capture.js'
import type { StoredHeader, StoredMeta } from './entry.js'
import { parseVary } from './key.js'

/** How freshness is decided when storing (resolved from the middleware options). */
export interface FreshnessOptions {
  /** Freshness lifetime (ms) for responses that give none. */
  ttlMs: number
  /** Use `ttlMs` even when the response states its own freshness. */
  forceTtl: boolean
  /** Stale-while-revalidate window (ms) when the response has no such directive. */
  staleWhileRevalidateMs: number
  /** Stale-if-error window (ms) when the response has no such directive. */
  staleIfErrorMs: number
  /** How long (ms) a stale entry with a validator is kept to be revalidated. */
  keepStaleMs: number
  /** Lower-case header names carrying tags; never stored, never forwarded. */
  tagHeaders: readonly string[]
}

/** Outcome of {@link decideStore}. */
export type StoreDecision =
  | { store: false; reason: string }
  | {
      store: true
      meta: StoredMeta
      /** Milliseconds the entry stays fresh from now. */
      freshMs: number
      /** Milliseconds after that it is still worth keeping (stale serving, revalidation). */
      staleMs: number
    }

/** Hop-by-hop fields (RFC 9110 §7.6.1): meaningful for one connection, never forwarded or stored. */
export const HOP_BY_HOP_FIELDS: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authorization',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
])

/** Fields a cache never stores or replays: hop-by-hop and computed ones. */
const NOT_STORED = new Set([...HOP_BY_HOP_FIELDS, 'age', 'content-length', 'set-cookie'])

/** Headers of a response: status and header fields as `res.getHeaders()` gives them. */
export interface ResponseHead {
  status: number
  headers: HeaderMap
}

/** The request side: method and header fields. */
export interface RequestHead {
  method: string
  url: string
  headers: HeaderMap
}

/**
 * Decides whether a response may be stored by a shared cache (RFC 9111 §3) and for how long.
 * Storability comes from http-cache-semantics; the rules it gets wrong or leaves open are
 * enforced here first (Set-Cookie, `Vary: *`, invalid freshness directives).
 */
export function decideStore(
  req: RequestHead,
  res: ResponseHead,
  tags: string[],
  options: FreshnessOptions,
  now = Date.now(),
): StoreDecision {
  if (req.method !== 'GET') return { store: false, reason: 'method' }
  const reqcc = parseCacheControl(req.headers['cache-control'])
  // RFC 9111 §5.2.1.5: no-store in the request forbids storing the response to it.
  if (has(reqcc, 'no-store')) return { store: false, reason: 'request-no-store' }
  // A shared cache must not replay one client's cookie to another; http-cache-semantics would
  // still serve such a response to a max-stale request, so it is never stored at all.
  if (res.headers['set-cookie'] !== undefined) return { store: false, reason: 'set-cookie' }
  // An event stream is a live feed: a recording of one replayed to later clients never is.
  if (/^\s*text\/event-stream/i.test(headerText(res.headers['content-type']) ?? '')) {
    return { store: false, reason: 'event-stream' }
  }
  const vary = parseVary(res.headers.vary)
  // RFC 9111 §4.1: "A stored response with a Vary header field value containing a member '*'
  // always fails to match", so storing it would only waste memory.
  if (vary === '*') return { store: false, reason: 'vary-star' }
  const rescc = parseCacheControl(res.headers['cache-control'])
  const sMaxAge = deltaSeconds(rescc, 's-maxage')
  const maxAge = deltaSeconds(rescc, 'max-age')
  // RFC 9111 §4.2.1: an invalid or duplicated freshness directive makes the response stale;
  // without a way to tell how stale, it is not stored.
  if (sMaxAge === null || maxAge === null) return { store: false, reason: 'invalid-cache-control' }

  const policy = new CachePolicy(
    { method: req.method, url: req.url, headers: req.headers as CachePolicy.Headers },
    { status: res.status, headers: stringHeaders(res.headers) },
    { shared: true },
  )
  if (!policy.storable()) return { store: false, reason: 'not-storable' }

  const dateMs = parseHttpDate(res.headers.date) ?? now
  const expires = res.headers.expires
  let lifetime: number
  const explicit = sMaxAge !== undefined || maxAge !== undefined || expires !== undefined
  if (options.forceTtl || !explicit) {
    lifetime = options.ttlMs / 1000
  } else if (sMaxAge !== undefined) {
    // RFC 9111 §4.2.1: s-maxage wins over max-age and Expires in a shared cache.
    lifetime = sMaxAge
  } else if (maxAge !== undefined) {
    lifetime = maxAge
  } else {
    // RFC 9111 §5.3: an invalid Expires (such as "0") means already expired.
    const expiresMs = parseHttpDate(expires)
    lifetime = expiresMs === undefined ? 0 : Math.max(0, (expiresMs - dateMs) / 1000)
  }

  const noCache =
    has(rescc, 'no-cache') ||
    (!res.headers['cache-control'] && /no-cache/i.test(headerText(res.headers.pragma) ?? ''))
  const mustRevalidate =
    has(rescc, 'must-revalidate') || has(rescc, 'proxy-revalidate') || sMaxAge !== undefined
  // RFC 9111 §4.2.4: no-cache and must-revalidate forbid serving a stale copy.
  const strict = noCache || has(rescc, 'must-revalidate') || has(rescc, 'proxy-revalidate')
  // RFC 9111 §5.2.2.10: s-maxage "incorporates the semantics of the proxy-revalidate response
  // directive" for a shared cache, so the option windows never apply; only the response's own
  // stale-while-revalidate / stale-if-error (RFC 5861) say that it may be served stale.
  const staleWindow = (directive: string, optionMs: number): number =>
    strict ? 0 : (deltaSeconds(rescc, directive) ?? (sMaxAge !== undefined ? 0 : optionMs / 1000))
  const swr = staleWindow('stale-while-revalidate', options.staleWhileRevalidateMs)
  const sie = staleWindow('stale-if-error', options.staleIfErrorMs)

  const etag = headerText(res.headers.etag)
  const lastModified = headerText(res.headers['last-modified'])
  const hasValidator =
    etag !== undefined || (lastModified !== undefined && parseHttpDate(lastModified) !== undefined)

  // RFC 9111 §4.2.3: apparent age from Date, corrected by the Age the origin sent.
  const ageHeader = Number.parseInt(headerText(res.headers.age) ?? '', 10)
  const initialAge = Math.max(0, (now - dateMs) / 1000, Number.isFinite(ageHeader) ? ageHeader : 0)
  const freshMs = noCache ? 0 : Math.max(0, (lifetime - initialAge) * 1000)
  const staleMs = Math.max(swr * 1000, sie * 1000, hasValidator ? options.keepStaleMs : 0)
  if (freshMs === 0 && staleMs === 0) return { store: false, reason: 'no-freshness' }
  if (noCache && !hasValidator) return { store: false, reason: 'no-cache-without-validator' }

  const headers: StoredHeader[] = []
  for (const [name, value] of Object.entries(res.headers)) {
    if (value === undefined || NOT_STORED.has(name) || options.tagHeaders.includes(name)) continue
    headers.push([name, Array.isArray(value) ? value.map(String) : String(value)])
  }
  if (res.headers.date === undefined) headers.push(['date', new Date(now).toUTCString()])

  const meta: StoredMeta = {
    status: res.status,
    headers,
    responseTime: now,
    initialAge,
    lifetime: noCache ? 0 : lifetime,
    swr,
    sie,
    mustRevalidate,
    noCache,
    authOk: has(rescc, 'public') || sMaxAge !== undefined || has(rescc, 'must-revalidate'),
    tags,
  }
  if (etag !== undefined) meta.etag = etag
  if (lastModified !== undefined) meta.lastModified = lastModified
  if (vary) meta.vary = vary
  return { store: true, meta, freshMs, staleMs }
}

function stringHeaders(headers: HeaderMap): CachePolicy.Headers {
  const out: CachePolicy.Headers = {}
  for (const [name, value] of Object.entries(headers)) {
    if (value !== undefined) out[name] = Array.isArray(value) ? value.map(String) : String(value)
  }
  // The library reads these as strings; a repeated field arrives as an array.
  for (const name of ['cache-control', 'vary', 'expires', 'pragma', 'date', 'age', 'etag', 'last-modified']) {
    const v = out[name]
    if (Array.isArray(v)) out[name] = v.join(', ')
  }
  return out
}

/**
 * True when the response that went out is not the one captured, so that storing the capture
 * would replay something no client received: another status (a session save that failed turned
 * the 200 into a 503), a body sent in place of it, a `Set-Cookie` or another `Cache-Control` that
 * hooks added as the head was written (express-session sets its cookie only then).
 */
export function changedOnTheWay(captured: Captured): boolean {
  if (captured.replaced) return true
  const sent = captured.sent
  if (sent === undefined) return false
  // A shared cache must not replay one client's cookie to another (see decideStore).
  if (sent.headers['set-cookie'] !== undefined) return true
  if (sent.status !== captured.status) return true
  return headerText(sent.headers['cache-control']) !== headerText(captured.headers['cache-control'])
}

/** Current age of a stored response in seconds (RFC 9111 §4.2.3). */
export function currentAge(meta: StoredMeta, now = Date.now()): number {
  return meta.initialAge + Math.max(0, now - meta.responseTime) / 1000
}

/** What to do with a stored response for one request. */
export type Evaluation =
  /** Serve it as is. */
  | { use: 'fresh'; age: number }
  /** Serve it (stale), and refresh it in the background. */
  | { use: 'stale-while-revalidate'; age: number }
  /** Serve it stale because the request's `max-stale` allows it. */
  | { use: 'stale-allowed'; age: number }
  /** Validate (or refetch) with the origin first; `staleIfError` when it may cover an origin error. */
  | { use: 'revalidate'; age: number; staleIfError: boolean }
  /** Must not be used for this request at all (Authorization). */
  | { use: 'none'; reason: string }

/**
 * Applies the request's `Cache-Control` (RFC 9111 §5.2.1) and the stored response's directives
 * to decide whether the stored response may answer this request. Malformed request directives
 * are ignored (they can only make the cache more conservative, never poison an entry).
 */
export function evaluate(meta: StoredMeta, headers: HeaderMap, now = Date.now()): Evaluation {
  // RFC 9111 §3.5: a response stored for anyone is reused for an authenticated request only
  // when it says it may be (public, s-maxage, must-revalidate).
  if (headers.authorization !== undefined && !meta.authOk) return { use: 'none', reason: 'authorization' }
  const age = currentAge(meta, now)
  const cc = headers['cache-control']
  const stale = meta.noCache || age >= meta.lifetime
  const sieOk = !meta.noCache && age < meta.lifetime + meta.sie
  if (cc === undefined) {
    // RFC 9111 §5.4: Pragma: no-cache counts as Cache-Control: no-cache when there is no Cache-Control.
    if (headers.pragma !== undefined && /no-cache/i.test(headerText(headers.pragma) ?? '')) {
      return { use: 'revalidate', age, staleIfError: sieOk }
    }
    if (!stale) return { use: 'fresh', age }
    if (!meta.noCache && age < meta.lifetime + meta.swr) return { use: 'stale-while-revalidate', age }
    return { use: 'revalidate', age, staleIfError: sieOk }
  }
  const reqcc = parseCacheControl(cc)
  // RFC 9111 §5.2.1.4: no-cache asks the cache to validate with the origin before reuse.
  if (has(reqcc, 'no-cache')) return { use: 'revalidate', age, staleIfError: sieOk }
  // RFC 9111 §5.2.1.1: max-age: the client does not want a response older than that.
  const maxAge = deltaSeconds(reqcc, 'max-age')
  if (typeof maxAge === 'number' && age > maxAge) return { use: 'revalidate', age, staleIfError: sieOk }
  // RFC 9111 §5.2.1.3: min-fresh: it must stay fresh for at least that much longer.
  const minFresh = deltaSeconds(reqcc, 'min-fresh')
  if (typeof minFresh === 'number' && meta.lifetime - age < minFresh) {
    return { use: 'revalidate', age, staleIfError: sieOk }
  }
  if (!stale) return { use: 'fresh', age }
  // RFC 9111 §5.2.1.2: max-stale accepts a stale response, but never one that must be revalidated
  // (§5.2.2.2, §5.2.2.8, §5.2.2.4).
  if (has(reqcc, 'max-stale') && !meta.mustRevalidate && !meta.noCache) {
    const raw = reqcc.values.get('max-stale')
    const limit = raw === true ? Number.POSITIVE_INFINITY : deltaSeconds(reqcc, 'max-stale')
    if (typeof limit === 'number' && age - meta.lifetime <= limit) return { use: 'stale-allowed', age }
  }
  if (!meta.noCache && age < meta.lifetime + meta.swr) return { use: 'stale-while-revalidate', age }
  return { use: 'revalidate', age, staleIfError: sieOk }
}

/** True when the request says `only-if-cached` (RFC 9111 §5.2.1.7). */
export function onlyIfCached(headers: HeaderMap): boolean {
  const cc = headers['cache-control']
  return cc !== undefined && has(parseCacheControl(cc), 'only-if-cached')
}

/** True when the request forbids storing (RFC 9111 §5.2.1.5). */
export function requestNoStore(headers: HeaderMap): boolean {
  const cc = headers['cache-control']
  return cc !== undefined && has(parseCacheControl(cc), 'no-store')
}

/**
 * Evaluates `If-None-Match` / `If-Modified-Since` against a stored response (RFC 9110 §13.2.2):
 * true when a 304 answers the request. If-None-Match uses the weak comparison and takes
 * precedence; a malformed date or entity-tag list never matches.
 */
export function notModified(meta: StoredMeta, headers: HeaderMap): boolean {
  const inm = headerText(headers['if-none-match'])
  if (inm !== undefined) {
    if (meta.status < 200 || meta.status >= 300) return false
    const trimmed = inm.trim()
    // RFC 9110 §13.1.2: "*" matches any current representation.
    if (trimmed === '*') return true
    if (meta.etag === undefined) return false
    const stored = opaqueTag(meta.etag)
    if (stored === undefined) return false
    for (const candidate of parseEntityTags(trimmed)) if (candidate === stored) return true
    return false
  }
  const ims = headers['if-modified-since']
  if (ims === undefined || meta.lastModified === undefined) return false
  if (meta.status < 200 || meta.status >= 300) return false
  const since = parseHttpDate(ims)
  const modified = parseHttpDate(meta.lastModified)
  if (since === undefined || modified === undefined) return false
  return modified <= since
}

const ETAG = /^\s*(W\/)?("[^"]*")\s*$/

/** The opaque part of an entity-tag (weak comparison ignores `W/`), or undefined when malformed. */
function opaqueTag(tag: string): string | undefined {
  return ETAG.exec(tag)?.[2]
}

function parseEntityTags(list: string): string[] {
  const out: string[] = []
  const re = /(?:W\/)?("[^"]*")/g
  for (let m = re.exec(list); m !== null && out.length < 64; m = re.exec(list)) out.push(m[1] as string)
  return out
}

/**
 * Header fields a 304 carries from the stored response (RFC 9110 §15.4.5).
 */
export const NOT_MODIFIED_HEADERS = new Set([
  'cache-control',
  'content-location',
  'date',
  'etag',
  'expires',
  'vary',
])
