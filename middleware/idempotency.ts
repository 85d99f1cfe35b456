import { createHash } from 'node:crypto'
import type { Request, RequestHandler, Response } from 'express'
import { type HeaderMap, mergeHeaderArgument } from '../src/http-cache/index.js'
import type { Duration, Redkit, StoredResponse } from '../src/index.js'
import { ConfigError, IdempotencyStore, isConnectionError, parseDuration } from '../src/index.js'
import { endAfter } from './end-after.js'
import { sendProblem, sendUnavailable } from './problem.js'

/** Options of {@link idempotency}. */
export interface IdempotencyOptions {
  /**
   * Methods the middleware applies to; others pass through untouched.
   * @default ['POST', 'PATCH']
   */
  methods?: string[]
  /**
   * Answer 400 when a request of those methods has no `Idempotency-Key`.
   * @default false
   */
  required?: boolean
  /**
   * How long a completed response is kept and replayed for retries with the same key.
   * @default '24h'
   */
  ttl?: Duration
  /**
   * How long the key stays claimed by a first request that is still running if its process dies
   * (extended while the request runs); afterwards the key can be used again.
   * @default '30s'
   */
  lease?: Duration
  /**
   * The client a key belongs to: keys of different scopes never meet.
   * @default `user:${req.user.id}` when an authenticated user is on the request, else `ip:${req.ip}`
   */
  scope?: (req: Request) => string
  /**
   * The request fingerprint; a retry whose fingerprint differs gets 422. Mount the middleware
   * after a body parser so the body is part of it.
   * @default SHA-256 of method, URL (path and query) and body
   */
  fingerprint?: (req: Request) => string
  /**
   * Header marking a replayed response.
   * @default 'Idempotent-Replayed'
   */
  replayHeader?: string
  /**
   * `Retry-After` of the 409 sent while the first request with the key is still running.
   * @default '1s'
   */
  retryAfter?: Duration
  /**
   * Largest response body stored; a bigger response is sent but not stored (the key is freed).
   * @default 1048576
   */
  maxBodySize?: number
}

interface ResolvedIdempotency {
  methods: Set<string>
  required: boolean
  ttlMs: number
  leaseMs: number
  scope: (req: Request) => string
  fingerprint: (req: Request) => string
  replayHeader: string
  retryAfterS: number
  maxBodySize: number
}

/** Longest key accepted. */
export const MAX_IDEMPOTENCY_KEY_LENGTH = 255

// Hop-by-hop, per-transfer or per-client fields are not replayed; the body is stored decoded
// (before any compression middleware below us), so its encoding and length are set afresh.
const NOT_REPLAYED = new Set([
  'connection',
  'keep-alive',
  'transfer-encoding',
  'content-length',
  'content-encoding',
  'date',
  'set-cookie',
])

// Answers that say this request was not carried out now, not what its result is: a timeout, a
// conflict with a concurrent request (a route lock mounted after us), too early, rate limited.
// Like a 5xx they are not stored, so a retry with the same key runs instead of replaying them.
const NOT_STORED_STATUSES = new Set([408, 409, 425, 429])

function defaultScope(req: Request): string {
  const user = (req as Request & { user?: { id?: unknown } }).user
  if (user && (typeof user.id === 'string' || typeof user.id === 'number')) return `user:${user.id}`
  return `ip:${req.ip ?? req.socket.remoteAddress ?? 'unknown'}`
}

function stableJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? ''
  if (Array.isArray(value)) return `[${value.map(stableJson).join(',')}]`
  const entries = Object.keys(value as object)
    .sort()
    .map((k) => `${JSON.stringify(k)}:${stableJson((value as Record<string, unknown>)[k])}`)
  return `{${entries.join(',')}}`
}

/** SHA-256 of method, URL and body (parsed bodies in a key-order-independent form). */
export function defaultFingerprint(req: Request): string {
  const hash = createHash('sha256').update(`${req.method}\n${req.originalUrl}\n`)
  const body: unknown = req.body
  if (Buffer.isBuffer(body)) hash.update(body)
  else if (typeof body === 'string') hash.update(body, 'utf8')
  else if (body !== undefined && body !== null) hash.update(stableJson(body), 'utf8')
  return hash.digest('hex')
}

function resolveIdempotencyOptions(options: IdempotencyOptions): ResolvedIdempotency {
  const methods = options.methods ?? ['POST', 'PATCH']
  if (!Array.isArray(methods) || methods.some((m) => typeof m !== 'string' || m.length === 0)) {
    throw new ConfigError(
      'idempotency.methods',
      'must be an array of method names',
      "write ['POST', 'PATCH']",
    )
  }
  const maxBodySize = options.maxBodySize ?? 1024 * 1024
  if (!Number.isInteger(maxBodySize) || maxBodySize < 0) {
    throw new ConfigError(
      'idempotency.maxBodySize',
      `must be a non-negative integer, got ${maxBodySize}`,
      'write 1048576',
    )
  }
  const replayHeader = options.replayHeader ?? 'Idempotent-Replayed'
  if (typeof replayHeader !== 'string' || !/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(replayHeader)) {
    throw new ConfigError('idempotency.replayHeader', 'must be a header name', "write 'Idempotent-Replayed'")
  }
  for (const field of ['scope', 'fingerprint'] as const) {
    if (options[field] !== undefined && typeof options[field] !== 'function') {
      throw new ConfigError(
        `idempotency.${field}`,
        'must be a function of the request',
        'pass (req) => string',
      )
    }
  }
  const leaseMs = parseDuration(options.lease ?? '30s', 'idempotency.lease')
  if (leaseMs < 100)
    throw new ConfigError('idempotency.lease', `must be at least 100 ms, got ${leaseMs}`, "write '30s'")
  const ttlMs = parseDuration(options.ttl ?? '24h', 'idempotency.ttl')
  if (ttlMs < 1000)
    throw new ConfigError('idempotency.ttl', `must be at least 1 s, got ${ttlMs}`, "write '24h'")
  return {
    methods: new Set(methods.map((m) => m.toUpperCase())),
    required: options.required ?? false,
    ttlMs,
    leaseMs,
    scope: options.scope ?? defaultScope,
    fingerprint: options.fingerprint ?? defaultFingerprint,
    replayHeader,
    retryAfterS: Math.max(
      1,
      Math.ceil(parseDuration(options.retryAfter ?? '1s', 'idempotency.retryAfter') / 1000),
    ),
    maxBodySize,
  }
}

/**
 * Parses an Idempotency-Key field value. draft-ietf-httpapi-idempotency-key-header-07 §2.1:
 * "Idempotency-Key is an Item Structured Header [RFC8941]. Its value MUST be a String" — a quoted
 * sf-string (RFC 8941 §3.3.3: printable ASCII, `\` escapes only `"` and `\`). A bare token of
 * visible ASCII is accepted too, as many clients send one. Returns the key or why it is invalid.
 */
export function parseIdempotencyKey(raw: string): { key: string } | { problem: string } {
  let key = ''
  if (raw.startsWith('"')) {
    let closed = false
    for (let i = 1; i < raw.length; i++) {
      const c = raw.charCodeAt(i)
      if (c === 0x5c) {
        const next = raw[i + 1]
        if (next !== '"' && next !== '\\')
          return { problem: 'has an invalid escape (only \\" and \\\\ are allowed)' }
        key += next
        i++
      } else if (c === 0x22) {
        if (i !== raw.length - 1) return { problem: 'has characters after the closing quote' }
        closed = true
      } else if (c < 0x20 || c > 0x7e) {
        return { problem: 'is not a valid header value (printable ASCII only)' }
      } else key += raw[i]
    }
    if (!closed) return { problem: 'misses its closing quote' }
  } else {
    for (let i = 0; i < raw.length; i++) {
      const c = raw.charCodeAt(i)
      if (c <= 0x20 || c > 0x7e || c === 0x22 || c === 0x5c) {
        return { problem: 'is not a valid header value (a quoted string or visible ASCII without spaces)' }
      }
    }
    key = raw
  }
  if (key.length === 0) return { problem: 'is empty' }
  // §5 (Security Considerations): keys follow a published format and are validated before use.
  if (key.length > MAX_IDEMPOTENCY_KEY_LENGTH) {
    return { problem: `is longer than ${MAX_IDEMPOTENCY_KEY_LENGTH} characters` }
  }
  return { key }
}

const DOCS = 'https://datatracker.ietf.org/doc/draft-ietf-httpapi-idempotency-key-header/'

function badKey(res: Response, detail: string): void {
  sendProblem(res, { status: 400, title: 'Invalid Idempotency-Key', detail, type: DOCS })
}

/**
 * Makes POST and PATCH retry-safe with the `Idempotency-Key` header (IETF draft
 * draft-ietf-httpapi-idempotency-key-header-07): the first request with a key runs and its
 * response (status, headers, body) is stored for `ttl`, per client scope; a retry with the same
 * key and request fingerprint gets the stored response without running the handler (marked
 * `Idempotent-Replayed: true`); the same key with another fingerprint gets 422; a retry while the
 * first is still running gets 409 with `Retry-After`. 5xx, 408, 409, 425 and 429 responses are not
 * stored, so the client may retry them. Redis down: 503 (fails closed: running the handler unguarded could duplicate it).
 *
 * @example
 * app.post('/payments', express.json(), idempotency(kit, { required: true }), pay)
 */
export function idempotency(kit: Redkit, options: IdempotencyOptions = {}): RequestHandler {
  const o = resolveIdempotencyOptions(options)
  const store = new IdempotencyStore(kit)
  return async function idempotencyMiddleware(req, res, next) {
    if (!o.methods.has(req.method)) return next()
    const values = req.headersDistinct?.['idempotency-key'] ?? toList(req.headers['idempotency-key'])
    if (values === undefined || values.length === 0) {
      // §2.7: a missing key for an operation that requires one is answered with 400.
      if (o.required) {
        sendProblem(res, {
          status: 400,
          title: 'Idempotency-Key is missing',
          detail: `${req.method} ${req.path} requires an Idempotency-Key header.`,
          type: DOCS,
        })
        return
      }
      return next()
    }
    // §2.1: "Clients MUST NOT include more than one Idempotency-Key header field in the same request."
    if (values.length > 1) return badKey(res, 'Send exactly one Idempotency-Key header.')
    const parsed = parseIdempotencyKey(values[0] as string)
    if ('problem' in parsed) return badKey(res, `The Idempotency-Key ${parsed.problem}.`)
    const key = parsed.key

    let scope: string
    let fingerprint: string
    try {
      scope = o.scope(req)
      fingerprint = o.fingerprint(req)
    } catch (error) {
      return next(error)
    }

    let begun: Awaited<ReturnType<IdempotencyStore['begin']>>
    try {
      begun = await store.begin(scope, key, fingerprint, o.leaseMs)
    } catch (error) {
      if (!isConnectionError(error)) return next(error)
      sendUnavailable(
        res,
        'Idempotency store unavailable',
        'The request was not processed; retry it with the same Idempotency-Key shortly.',
      )
      return
    }

    if (begun.kind === 'mismatch') {
      // §2.7: reusing a key with a different request payload is answered with 422.
      sendProblem(res, {
        status: 422,
        title: 'Idempotency-Key is already used',
        detail: 'This Idempotency-Key was used with a different request; use a new key for a new request.',
        type: DOCS,
      })
      return
    }
    if (begun.kind === 'busy') {
      // §2.6/§2.7: a retry while the original is still being processed gets a 409 conflict.
      res.setHeader('Retry-After', String(o.retryAfterS))
      sendProblem(res, {
        status: 409,
        title: 'A request is outstanding for this Idempotency-Key',
        detail: 'The first request with this key is still being processed; retry shortly.',
        type: DOCS,
      })
      return
    }
    if (begun.kind === 'replay') {
      // §2.6: a retry after completion "SHOULD respond with the result of the previously completed operation".
      if (kit.events.has('idempotency:replay')) kit.events.emit('idempotency:replay', {})
      replay(res, begun.response, o.replayHeader)
      return
    }

    record(kit, store, res, { scope, key, fingerprint, token: begun.token }, o)
    next()
  }
}

function toList(value: string | string[] | undefined): string[] | undefined {
  return value === undefined ? undefined : Array.isArray(value) ? value : [value]
}

function replay(res: Response, stored: StoredResponse, replayHeader: string): void {
  res.statusCode = stored.status
  // A field this response already has was set by middleware that ran before us for this request
  // (CORS for this Origin, a request id, rate-limit counters): it describes this request, so it is
  // kept, and the stored fields fill in the rest.
  for (const [name, value] of Object.entries(stored.headers)) {
    if (!res.hasHeader(name)) res.setHeader(name, value)
  }
  res.setHeader(replayHeader, 'true')
  res.setHeader('Content-Length', stored.body.length)
  res.end(stored.body)
}

interface Claim {
  scope: string
  key: string
  fingerprint: string
  token: string
}

/** Captures what the handler sends and stores it when the response has finished. */
function record(
  kit: Redkit,
  store: IdempotencyStore,
  res: Response,
  claim: Claim,
  o: ResolvedIdempotency,
): void {
  const chunks: Buffer[] = []
  let size = 0
  // Larger than maxBodySize, or a chunk that is neither text nor bytes (Node refuses to send it).
  let dropped = false
  const drop = () => {
    dropped = true
    chunks.length = 0
  }
  const keep = (chunk: unknown, encoding: unknown) => {
    if (dropped || chunk === undefined || chunk === null || typeof chunk === 'function') return
    const buffer = Buffer.isBuffer(chunk)
      ? chunk
      : typeof chunk === 'string'
        ? Buffer.from(chunk, typeof encoding === 'string' ? (encoding as BufferEncoding) : 'utf8')
        : chunk instanceof Uint8Array
          ? Buffer.from(chunk)
          : undefined
    if (!buffer) return drop()
    size += buffer.length
    if (size > o.maxBodySize) drop()
    else chunks.push(buffer)
  }
  const writeHead = res.writeHead
  const write = res.write
  const end = res.end
  // Headers given to writeHead(status, [message,] headers) are not in res.getHeaders() when none
  // were set before it (no X-Powered-By): they are taken from the call.
  const headArgument: HeaderMap = {}
  res.writeHead = function idempotencyWriteHead(this: Response, ...args: unknown[]) {
    mergeHeaderArgument(headArgument, typeof args[1] === 'string' ? args[2] : args[1])
    return (writeHead as (...a: unknown[]) => Response).apply(this, args)
  } as Response['writeHead']
  res.write = function idempotencyWrite(this: Response, chunk: unknown, ...rest: unknown[]) {
    keep(chunk, rest[0])
    return (write as (...args: unknown[]) => boolean).call(this, chunk, ...rest)
  } as Response['write']
  const onError = (error: unknown) =>
    kit.events.emit('error', { error: error as Error, connection: 'idempotency' })
  const lease = setInterval(
    () => {
      store.extend(claim.scope, claim.key, claim.fingerprint, claim.token, o.leaseMs).then((ok) => {
        if (!ok) clearInterval(lease)
      }, onError)
    },
    Math.max(50, Math.floor(o.leaseMs / 3)),
  )
  lease.unref?.()

  const settle = (): Promise<unknown> => {
    // 5xx is not stored: the failure may be transient and the client may retry with the same key.
    // Nor is a status below 200, no final answer (and below 100 one Node refuses to send).
    const status = res.statusCode
    if (status < 200 || status >= 500 || NOT_STORED_STATUSES.has(status) || dropped)
      return store.abort(claim.scope, claim.key, claim.fingerprint, claim.token)
    const headers: Record<string, string | string[]> = {}
    const sent: HeaderMap = { ...res.getHeaders(), ...headArgument }
    for (const [name, value] of Object.entries(sent)) {
      if (value === undefined || NOT_REPLAYED.has(name) || name === o.replayHeader.toLowerCase()) continue
      headers[name] = Array.isArray(value) ? value.map(String) : String(value)
    }
    const response: StoredResponse = { status, headers, body: Buffer.concat(chunks) }
    return store.complete(claim.scope, claim.key, claim.fingerprint, claim.token, response, o.ttlMs)
  }

  let ended = false
  res.end = function idempotencyEnd(this: Response, chunk?: unknown, ...rest: unknown[]) {
    res.end = end
    ended = true
    clearInterval(lease)
    keep(chunk, rest[0])
    // The record is settled before the last bytes go out, so a retry sent once the client has
    // this answer is replayed rather than told the first request is still running.
    endAfter(kit, this, end, [chunk, ...rest], settle().catch(onError), 'idempotency')
    return this
  } as Response['end']

  res.once('close', () => {
    if (ended) return
    // The connection closed before the response was complete, but the handler may still be doing
    // its work: the key is not freed at once, only no longer extended, so it lapses after `lease`.
    clearInterval(lease)
  })
}
