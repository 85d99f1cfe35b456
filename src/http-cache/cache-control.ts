/** Header value as Node gives it. */
export type HeaderValue = string | string[] | number | undefined

/** Header fields keyed by lower-case name, as `IncomingMessage.headers` / `res.getHeaders()`. */
export type HeaderMap = Record<string, HeaderValue>

/** Parsed `Cache-Control`: directive name (lower case) → value (`true` when it has none). */
export interface Directives {
  readonly values: ReadonlyMap<string, string | true>
  /** Directives present more than once with different values (RFC 9111 §4.2.1: invalid). */
  readonly conflicting: ReadonlySet<string>
}

const TOKEN = /^[!#$%&'*+.^_`|~0-9a-z-]+$/
const EMPTY: Directives = { values: new Map(), conflicting: new Set() }
/** Largest delta-seconds we keep (RFC 9111 §1.2.2: 2^31 when the value overflows). */
const MAX_DELTA = 2_147_483_648

/** Joins a header that may be repeated or numeric into one comma-separated string. */
export function headerText(value: HeaderValue): string | undefined {
  if (value === undefined) return undefined
  if (Array.isArray(value)) return value.join(', ')
  return String(value)
}

/**
 * Parses a `Cache-Control` field (RFC 9111 §5.2): commas inside quoted strings do not split,
 * names are case-insensitive, parts that are not tokens are ignored, and a directive repeated
 * with a different value is recorded as conflicting instead of silently taking the last one.
 */
export function parseCacheControl(field: HeaderValue): Directives {
  const text = headerText(field)
  if (!text) return EMPTY
  const values = new Map<string, string | true>()
  const conflicting = new Set<string>()
  for (const part of splitList(text)) {
    const eq = part.indexOf('=')
    const name = (eq === -1 ? part : part.slice(0, eq)).trim().toLowerCase()
    if (!TOKEN.test(name)) continue
    let value: string | true = true
    if (eq !== -1) {
      value = part.slice(eq + 1).trim()
      if (value.startsWith('"') && value.endsWith('"') && value.length >= 2) {
        value = value.slice(1, -1).replace(/\\(.)/g, '$1')
      }
    }
    const previous = values.get(name)
    if (previous !== undefined && previous !== value) conflicting.add(name)
    values.set(name, value)
  }
  return { values, conflicting }
}

/** Splits a comma-separated list, keeping commas inside quoted strings. */
export function splitList(text: string): string[] {
  if (!text.includes('"')) return text.split(',').filter((p) => p.trim() !== '')
  const parts: string[] = []
  let current = ''
  let quoted = false
  for (let i = 0; i < text.length; i++) {
    const c = text[i] as string
    if (c === '\\' && quoted && i + 1 < text.length) {
      current += c + text[++i]
      continue
    }
    if (c === '"') quoted = !quoted
    if (c === ',' && !quoted) {
      if (current.trim() !== '') parts.push(current)
      current = ''
      continue
    }
    current += c
  }
  if (current.trim() !== '') parts.push(current)
  return parts
}

/**
 * Reads a delta-seconds directive: `undefined` when absent, `null` when present but invalid
 * (not digits, or conflicting duplicates), else whole seconds capped at 2^31.
 */
export function deltaSeconds(directives: Directives, name: string): number | null | undefined {
  const value = directives.values.get(name)
  if (value === undefined) return undefined
  if (value === true || directives.conflicting.has(name) || !/^\d+$/.test(value)) return null
  return Math.min(Number(value), MAX_DELTA)
}

/** True when the directive is present (with or without a value). */
export function has(directives: Directives, name: string): boolean {
  return directives.values.has(name)
}

/**
 * Parses an HTTP date (RFC 9110 §5.6.7); `undefined` for anything that is not a date, so that
 * a malformed `If-Modified-Since` or `Expires` never throws.
 */
export function parseHttpDate(value: HeaderValue): number | undefined {
  const text = headerText(value)
  if (!text || text.length > 64) return undefined
  const ms = Date.parse(text)
  return Number.isFinite(ms) ? ms : undefined
}
