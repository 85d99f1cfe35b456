import { createHash } from 'node:crypto'
import { encode } from '../codec/index.js'

/** Bumped when the key derivation changes, so old entries are never read with new semantics. */
export const QUERY_KEY_VERSION = 'v1'

/**
 * Collapses whitespace runs outside string literals, quoted identifiers and dollar-quoted bodies
 * to one space and trims the ends: queries that differ only in layout share a key, while
 * `'a  b'` and `'a b'` inside literals stay different.
 *
 * @example
 * normalizeQuery('SELECT *\n  FROM orders ') // 'SELECT * FROM orders'
 */
export function normalizeQuery(query: string): string {
  let out = ''
  let i = 0
  let pendingSpace = false
  const n = query.length
  while (i < n) {
    const c = query[i] as string
    if (c === ' ' || c === '\t' || c === '\n' || c === '\r' || c === '\f' || c === '\v') {
      pendingSpace = out.length > 0
      i++
      continue
    }
    if (pendingSpace) {
      out += ' '
      pendingSpace = false
    }
    if (c === "'" || c === '"' || c === '`') {
      // Copy the quoted run verbatim; a doubled quote is an escaped quote and stays inside.
      let j = i + 1
      while (j < n) {
        if (query[j] === c) {
          if (query[j + 1] === c) j += 2
          else break
        } else if (query[j] === '\\' && c !== '"') j += 2
        else j++
      }
      out += query.slice(i, j + 1)
      i = j + 1
      continue
    }
    if (c === '$') {
      const tag = /^\$[A-Za-z_]*\$/.exec(query.slice(i, i + 64))?.[0]
      if (tag) {
        const end = query.indexOf(tag, i + tag.length)
        const stop = end === -1 ? n : end + tag.length
        out += query.slice(i, stop)
        i = stop
        continue
      }
    }
    out += c
    i++
  }
  return out
}

/**
 * `v1:` + base64url SHA-256 of the normalized query and the parameters encoded with their types
 * (`1` and `'1'`, a Date and its ISO string, give different keys). Throws `CodecError` for
 * parameters that cannot be encoded.
 */
export function queryKey(
  query: string,
  params: readonly unknown[] | Record<string, unknown> | undefined,
): string {
  const hash = createHash('sha256')
  hash.update(normalizeQuery(query))
  hash.update('\u0000')
  hash.update(encode(params ?? []))
  return `${QUERY_KEY_VERSION}:${hash.digest('base64url')}`
}
