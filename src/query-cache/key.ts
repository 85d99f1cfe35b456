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
export function queryKey(query: string, params: QueryParamsInput): string {
  // Hot path: the same statement with scalar parameters is looked up again and again.
  const paramsKey = scalarParamsKey(params)
  if (paramsKey === undefined || query.length > MEMO_MAX_QUERY) return deriveKey(query, params)
  let byParams = memo.get(query)
  const known = byParams?.get(paramsKey)
  if (known !== undefined) return known
  const key = deriveKey(query, params)
  if (memoSize >= MEMO_MAX) {
    memo.clear()
    memoSize = 0
    byParams = undefined
  }
  if (!byParams) {
    byParams = new Map()
    memo.set(query, byParams)
  }
  byParams.set(paramsKey, key)
  memoSize++
  return key
}

type QueryParamsInput = readonly unknown[] | Record<string, unknown> | undefined

const MEMO_MAX = 10_000
const MEMO_MAX_QUERY = 8192
const MEMO_MAX_PARAMS = 1024
/** query text → typed scalar parameters → key. Cleared when full (cheap to rebuild). */
const memo = new Map<string, Map<string, string>>()
let memoSize = 0

/**
 * A string that identifies the parameters exactly when every one is a scalar (its type is part of
 * it, so `1` and `'1'` differ); `undefined` otherwise, or when too long to be worth keeping.
 */
function scalarParamsKey(params: QueryParamsInput): string | undefined {
  if (params === undefined) return ''
  if (!Array.isArray(params)) return undefined
  let out = ''
  for (let i = 0; i < params.length; i++) {
    const p: unknown = params[i]
    switch (typeof p) {
      case 'string':
        out += `\u0000s${p.length}:${p}`
        break
      case 'number':
        out += `\u0000n${Object.is(p, -0) ? '-0' : String(p)}`
        break
      case 'boolean':
        out += p ? '\u0000t' : '\u0000f'
        break
      case 'bigint':
        out += `\u0000b${p}`
        break
      case 'undefined':
        out += '\u0000u'
        break
      default:
        if (p === null) out += '\u0000z'
        else return undefined
    }
    if (out.length > MEMO_MAX_PARAMS) return undefined
  }
  return out
}

function deriveKey(query: string, params: QueryParamsInput): string {
  const hash = createHash('sha256')
  hash.update(normalizeQuery(query))
  hash.update('\u0000')
  hash.update(encode(params ?? []))
  return `${QUERY_KEY_VERSION}:${hash.digest('base64url')}`
}
