import { createHash } from 'node:crypto'
import { encode } from '../codec/index.js'

/**
 * Bumped when the key derivation changes, so old entries are never read with new semantics.
 * v2: comments, E'' strings, string continuations and dollar tags with digits are read as
 * PostgreSQL reads them (v1 merged some queries that differ there).
 */
export const QUERY_KEY_VERSION = 'v2'

/**
 * Normalizes a query's layout, so that queries differing only in layout share a key while
 * queries that mean different things never do. Read as PostgreSQL reads it (with
 * `standard_conforming_strings` on, the default):
 *
 * - whitespace runs between tokens become one space, and the ends are trimmed;
 * - string literals, quoted identifiers, dollar-quoted bodies and comments are kept as written;
 *   the line end closing a `--` comment stays a line end, and so does one between two string
 *   literals (`'a'` newline `'b'` is the one literal `'ab'`; on one line it is a syntax error);
 * - a backslash escapes only in `E'...'` strings.
 *
 * Where another reading of the text would differ, the rest of the query is kept exactly as
 * written (no key is then shared by mistake): a backslash in a `'...'` string or a quoted
 * identifier (an escape with `standard_conforming_strings` off, and in MySQL), `#` (a comment
 * in MySQL), `--` not followed by whitespace (two minus signs in MySQL), a block comment nested
 * in another (MySQL ends it at the first `*\/`), and a dollar quote right after an identifier.
 *
 * @example
 * normalizeQuery('SELECT *\n  FROM orders ') // 'SELECT * FROM orders'
 * normalizeQuery('SELECT id FROM t -- list\n  WHERE id = 1') // 'SELECT id FROM t -- list\nWHERE id = 1'
 */
export function normalizeQuery(query: string): string {
  const n = query.length
  let out = ''
  /** Separator owed before the next token: '', ' ' or a line end. */
  let gap = ''
  /** The last token was a `--` comment: the line end after it must stay one. */
  let afterComment = false
  /** The last token was a '...' literal: a line end before the next `'` continues it. */
  let afterString = false
  /** Where the identifier (or other word) the last characters belong to started, or -1. */
  let wordStart = -1
  let i = 0
  const emit = (token: string) => {
    if (gap !== '' && out.length > 0) out += gap
    out += token
    gap = ''
    afterComment = false
  }
  const rest = () => {
    if (gap !== '' && out.length > 0) out += gap
    return out + query.slice(i)
  }
  while (i < n) {
    const c = query[i] as string
    if (isSpace(c)) {
      let lineEnd = ''
      let j = i
      while (j < n && isSpace(query[j] as string)) {
        if (query[j] === '\n') lineEnd = '\n'
        else if (query[j] === '\r' && lineEnd === '') lineEnd = '\r'
        j++
      }
      if (lineEnd !== '' && (afterComment || (afterString && query[j] === "'"))) gap = lineEnd
      else if (gap === '') gap = ' '
      wordStart = -1
      i = j
      continue
    }
    if (c === "'" || c === '"' || c === '`') {
      const escapes = c === "'" && wordStart === i - 1 && (query[i - 1] === 'E' || query[i - 1] === 'e')
      let j = i + 1
      for (; j < n; j++) {
        const d = query[j]
        if (d === c) {
          if (query[j + 1] !== c) break
          j++
        } else if (d === '\\') {
          if (!escapes) return rest()
          j++
        }
      }
      if (j >= n) return rest()
      emit(query.slice(i, j + 1))
      afterString = c === "'"
      wordStart = -1
      i = j + 1
      continue
    }
    if (c === '$') {
      DOLLAR_TAG.lastIndex = i
      const tag = DOLLAR_TAG.exec(query)?.[0]
      if (tag !== undefined) {
        if (wordStart !== -1) return rest()
        const end = query.indexOf(tag, i + tag.length)
        if (end === -1) return rest()
        emit(query.slice(i, end + tag.length))
        afterString = false
        i = end + tag.length
        continue
      }
    }
    if (c === '-' && query[i + 1] === '-') {
      if (i + 2 < n && !isSpace(query[i + 2] as string)) return rest()
      let j = i + 2
      while (j < n && query[j] !== '\n' && query[j] !== '\r') j++
      // `afterString` stays: `'a' -- c` newline `'b'` continues the literal too.
      emit(query.slice(i, j).trimEnd())
      afterComment = true
      wordStart = -1
      i = j
      continue
    }
    if (c === '/' && query[i + 1] === '*') {
      const end = query.indexOf('*/', i + 2)
      const nested = query.indexOf('/*', i + 2)
      if (end === -1 || (nested !== -1 && nested < end)) return rest()
      emit(query.slice(i, end + 2))
      afterString = false
      wordStart = -1
      i = end + 2
      continue
    }
    if (c === '#') return rest()
    emit(c)
    afterString = false
    if (!isWordChar(c)) wordStart = -1
    else if (wordStart === -1) wordStart = i
    i++
  }
  return out
}

/** `$$` or `$tag$` (a tag is an identifier without `$`). */
const DOLLAR_TAG = /\$(?:[A-Za-z_\u0080-\uffff][A-Za-z0-9_\u0080-\uffff]*)?\$/y

function isSpace(c: string): boolean {
  return c === ' ' || c === '\t' || c === '\n' || c === '\r' || c === '\f' || c === '\v'
}

/** Characters that continue an identifier, a keyword, a number or a `$1` parameter. */
function isWordChar(c: string): boolean {
  return (
    (c >= 'a' && c <= 'z') ||
    (c >= 'A' && c <= 'Z') ||
    (c >= '0' && c <= '9') ||
    c === '_' ||
    c === '$' ||
    c >= '\u0080'
  )
}

/**
 * `v2:` + base64url SHA-256 of the normalized query and the parameters encoded with their types
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
