import { createHash } from 'node:crypto'
import { isIPv6 } from 'node:net'
import { type HeaderMap, headerText } from './cache-control.js'

/** How the query string takes part in the cache key. */
export interface QueryKeyOptions {
  /**
   * Sort parameters by name, so `?a=1&b=2` and `?b=2&a=1` share an entry.
   * @default false
   */
  sort?: boolean
  /**
   * Only these parameter names count (all others are ignored). Empty list: every parameter counts.
   * @default []
   */
  include?: string[]
  /**
   * Parameter names left out of the key (tracking parameters such as `utm_source`).
   * @default []
   */
  exclude?: string[]
}

/** Resolved {@link QueryKeyOptions}. */
export interface ResolvedQueryKey {
  sort: boolean
  include: ReadonlySet<string>
  exclude: ReadonlySet<string>
}

/** Key parts longer than this are replaced by their hash, so a 100 KB URL makes a short key. */
const MAX_PLAIN = 200

/** Applies {@link QueryKeyOptions} to a raw query string (without `?`), keeping raw encodings. */
export function normalizeQuery(query: string, options: ResolvedQueryKey): string {
  if (!query) return ''
  if (!options.sort && options.include.size === 0 && options.exclude.size === 0) return query
  let params = query.split('&').filter((p) => p !== '')
  if (options.include.size > 0 || options.exclude.size > 0) {
    params = params.filter((p) => {
      const name = paramName(p)
      if (options.include.size > 0 && !options.include.has(name)) return false
      return !options.exclude.has(name)
    })
  }
  if (options.sort) params.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))
  return params.join('&')
}

function paramName(param: string): string {
  const eq = param.indexOf('=')
  const raw = eq === -1 ? param : param.slice(0, eq)
  try {
    return decodeURIComponent(raw.replace(/\+/g, ' '))
  } catch {
    return raw
  }
}

/** Splits a request target into path and query (without `?`); a `#fragment` is dropped. */
export function splitTarget(target: string): { path: string; query: string } {
  const hash = target.indexOf('#')
  const clean = hash === -1 ? target : target.slice(0, hash)
  const q = clean.indexOf('?')
  return q === -1 ? { path: clean, query: '' } : { path: clean.slice(0, q), query: clean.slice(q + 1) }
}

/**
 * The URL part of a cache key: scheme, lower-cased host, then path and (normalised) query after a
 * space. A valid scheme or host (see {@link isValidHost}) contains no space, so two different
 * (scheme, host, target) can never give one key. Long values are hashed so keys stay short
 * whatever the client sends.
 */
export function urlKey(
  scheme: string,
  host: string,
  path: string,
  query: string,
  options: ResolvedQueryKey,
): string {
  const q = normalizeQuery(query, options)
  const text = `${scheme.toLowerCase()}://${host.toLowerCase()} ${path}${q ? `?${q}` : ''}`
  return text.length > MAX_PLAIN ? `#${hash(text)}` : text
}

const REG_NAME = /^(?:[a-z0-9\-._~!$&'()*+,;=]|%[0-9a-f]{2})*$/i
const PORT = /^(?::\d*)?$/
const SCHEME = /^[a-z][a-z0-9+.-]*$/i

/**
 * True when `value` is a `host[:port]` as RFC 3986 §3.2.2–3.2.3 define them: a reg-name or IPv4
 * address, or an IPv6 literal in brackets, then digits after a colon. Such a value holds no `/`,
 * `?`, `#`, `@` or space, so it cannot shift a cache key's parts (a `Host: shop.example/api`
 * would make `GET /42` look like `/api/42`).
 */
export function isValidHost(value: string): boolean {
  if (value.startsWith('[')) {
    const close = value.indexOf(']')
    return close !== -1 && isIPv6(value.slice(1, close)) && PORT.test(value.slice(close + 1))
  }
  const colon = value.indexOf(':')
  const name = colon === -1 ? value : value.slice(0, colon)
  return REG_NAME.test(name) && PORT.test(colon === -1 ? '' : value.slice(colon))
}

/** True when `value` is a URI scheme (RFC 3986 §3.1). */
export function isValidScheme(value: string): boolean {
  return SCHEME.test(value)
}

/**
 * Parses a `Vary` field into lower-case field names; `'*'` when any member is `*` or is not a
 * valid field name (such a response can never be selected, RFC 9111 §4.1).
 */
export function parseVary(field: string | string[] | number | undefined): string[] | '*' | undefined {
  const text = headerText(field)
  if (text === undefined || text.trim() === '') return undefined
  const names = new Set<string>()
  for (const part of text.split(',')) {
    const name = part.trim().toLowerCase()
    if (name === '') continue
    if (name === '*' || !/^[!#$%&'*+.^_`|~0-9a-z-]+$/.test(name)) return '*'
    names.add(name)
  }
  if (names.size === 0) return undefined
  return [...names].sort()
}

/**
 * Identifies the variant selected by `fields` for a request: the request's values of those
 * fields (absent and empty are distinct), hashed.
 */
export function variantId(fields: readonly string[], headers: HeaderMap): string {
  const h = createHash('sha1')
  for (const name of fields) {
    const value = headerText(headers[name])
    h.update(value === undefined ? '\u0000' : `\u0001${normalizeFieldValue(value)}`)
    h.update('\u0002')
  }
  return h.digest('base64url')
}

function normalizeFieldValue(value: string): string {
  // Whitespace around list members carries no meaning (RFC 9111 §4.1 allows normalising it).
  return value
    .split(',')
    .map((v) => v.trim())
    .join(',')
}

/** Short, stable hash used in keys. */
export function hash(text: string): string {
  return createHash('sha256').update(text).digest('base64url')
}
