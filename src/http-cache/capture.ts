import type { OutgoingHttpHeaders, ServerResponse } from 'node:http'
import type { HeaderMap } from './cache-control.js'

/** What the capture saw of one origin response. */
export interface Captured {
  status: number
  /**
   * Header fields as the origin gave them with its first write, before middleware mounted
   * outside changed them: they describe the captured bytes.
   */
  headers: HeaderMap
  /** Body bytes, or `undefined` when the body was larger than the limit (or not captured). */
  body: Buffer | undefined
  /** True when the response was held back (see {@link CaptureOptions.holdBack}). */
  held: boolean
  /**
   * The head as it went to the client, read once Node wrote it: with what hooks that run only
   * then added (express-session's `Set-Cookie`, anything on `on-headers`). `undefined` when
   * nothing was sent (held back, detached).
   */
  sent: { status: number; headers: HeaderMap } | undefined
  /**
   * True when `end()` came again before an earlier call had ended the response: a middleware
   * held the first back and answered otherwise (a session save that failed became a 503), so
   * the captured body is not what went out.
   */
  replaced: boolean
}

/** How a response is captured. */
export interface CaptureOptions {
  /** Largest body (bytes) that is kept; bigger ones pass through and `body` is `undefined`. */
  maxSize: number
  /** Keep the body at all (false for HEAD and for responses that cannot be stored). */
  keepBody: boolean
  /**
   * Called once with the status and headers, before anything reaches the client: return true to
   * hold the response back (nothing of it is sent; the caller answers instead through
   * `Capture.send`), e.g. a 304 to the cache's own conditional request or a 5xx covered by
   * stale-if-error.
   */
  holdBack?: (status: number, headers: HeaderMap) => boolean
  /**
   * Called once with the status and headers of a response that is not held back: return false
   * when it cannot be stored whatever its body, which is then not kept.
   */
  storable?: (status: number, headers: HeaderMap) => boolean
  /** Nothing is ever sent (a background refresh on a response object with no client). */
  detached?: boolean
  /** Header names removed before the head leaves (tag headers). */
  strip: readonly string[]
  /** Headers added to the response as it leaves (`X-Cache: MISS`). */
  add?: Record<string, string>
  /**
   * Called when a whole body arrives in one `end(chunk)` before the head is written, to set
   * headers that depend on it (the generated ETag).
   */
  onSingleChunk?: (chunk: Buffer) => void
}

/** Writes to the response as they were before the capture wrapped them. */
export interface OriginalWriters {
  writeHead: ServerResponse['writeHead']
  end: (chunk?: Buffer | string) => void
}

type WriteCallback = (error?: Error | null) => void

/**
 * Wraps `res.writeHead`, `res.write` and `res.end` to record what the origin sends while it
 * streams to the client. The head is recorded at the first of them, before it is passed on, so
 * a `compression` middleware placed outside sees the result, and one placed inside has already
 * set `Content-Encoding` for the bytes that reach us: the stored headers always describe the
 * stored bytes. The head is read once more as Node writes it (`sent`), for what is added only
 * then. Resolves when the response ends or the connection closes.
 */
export function captureResponse(
  res: ServerResponse,
  options: CaptureOptions,
): { done: Promise<Captured | undefined>; original: OriginalWriters } {
  const originalWriteHead = res.writeHead
  const originalWrite = res.write
  const originalEnd = res.end
  let headSeen = false
  let held = false
  let sent: Captured['sent']
  let endCalled = false
  let replaced = false
  let status = 0
  let headers: HeaderMap = {}
  let chunks: Buffer[] = []
  let size = 0
  let keep = options.keepBody
  let settled = false
  let resolve!: (value: Captured | undefined) => void
  const done = new Promise<Captured | undefined>((r) => {
    resolve = r
  })
  const silent = () => options.detached === true || held

  const finish = (ended: boolean) => {
    if (settled) return
    settled = true
    res.writeHead = originalWriteHead
    res.write = originalWrite
    res.end = originalEnd
    res.off('close', onClose)
    res.off('finish', onFinish)
    if (!ended || !headSeen) return resolve(undefined)
    resolve({ status, headers, body: keep ? Buffer.concat(chunks, size) : undefined, held, sent, replaced })
    chunks = []
  }
  const onClose = () => finish(false)
  // An end() that a middleware inside defers (a session saved first) finishes the response later.
  const onFinish = () => finish(true)
  res.on('close', onClose)
  res.on('finish', onFinish)

  const onHead = (code: number, extra: unknown) => {
    headSeen = true
    status = code
    headers = { ...(res.getHeaders() as HeaderMap) }
    mergeHeaderArgument(headers, extra)
    const length = Number(headers['content-length'])
    if (Number.isFinite(length) && length > options.maxSize) dropBody()
    if (options.holdBack?.(status, headers)) held = true
    else if (options.storable && !options.storable(status, headers)) dropBody()
    if (silent()) return
    for (const name of options.strip) if (res.hasHeader(name)) res.removeHeader(name)
    if (options.add) for (const [name, value] of Object.entries(options.add)) res.setHeader(name, value)
  }

  const dropBody = () => {
    keep = false
    chunks = []
    size = 0
  }

  const record = (chunk: unknown, encoding: unknown) => {
    if (!keep || chunk === undefined || chunk === null || typeof chunk === 'function') return
    const buffer =
      typeof chunk === 'string'
        ? Buffer.from(chunk, typeof encoding === 'string' ? (encoding as BufferEncoding) : 'utf8')
        : Buffer.isBuffer(chunk)
          ? chunk
          : chunk instanceof Uint8Array
            ? Buffer.from(chunk)
            : undefined
    if (!buffer) return dropBody()
    size += buffer.length
    if (size > options.maxSize) return dropBody()
    chunks.push(buffer)
  }

  res.writeHead = function capturedWriteHead(this: ServerResponse, ...args: unknown[]) {
    if (!headSeen) {
      const code = typeof args[0] === 'number' ? args[0] : this.statusCode
      const extra = typeof args[1] === 'string' ? args[2] : args[1]
      onHead(code, extra)
      if (!silent() && extra !== undefined) {
        const filtered = stripHeaderArgument(extra, options.strip)
        if (typeof args[1] === 'string') args[2] = filtered
        else args[1] = filtered
      }
    }
    if (silent()) {
      this.statusCode = typeof args[0] === 'number' ? args[0] : this.statusCode
      return this
    }
    const result = (originalWriteHead as (...a: unknown[]) => ServerResponse).apply(this, args)
    // Read after the call: hooks installed before this wrapper (on-headers) run inside it.
    if (sent === undefined && this.headersSent) {
      const extra = typeof args[1] === 'string' ? args[2] : args[1]
      const out: HeaderMap = {}
      mergeHeaderArgument(out, extra)
      Object.assign(out, this.getHeaders() as HeaderMap)
      sent = { status: this.statusCode, headers: out }
    }
    return result
  } as ServerResponse['writeHead']

  res.write = function capturedWrite(this: ServerResponse, chunk: unknown, encoding?: unknown, cb?: unknown) {
    if (!headSeen && !this.headersSent) onHead(this.statusCode, undefined)
    record(chunk, encoding)
    if (silent()) {
      const callback = typeof encoding === 'function' ? encoding : cb
      if (typeof callback === 'function') process.nextTick(callback as WriteCallback)
      return true
    }
    return (originalWrite as (...a: unknown[]) => boolean).call(this, chunk, encoding, cb)
  } as ServerResponse['write']

  res.end = function capturedEnd(this: ServerResponse, chunk?: unknown, encoding?: unknown, cb?: unknown) {
    if (settled) return (originalEnd as (...a: unknown[]) => ServerResponse).call(this, chunk, encoding, cb)
    if (endCalled && !this.writableEnded) replaced = true
    endCalled = true
    if (!headSeen && !this.headersSent) {
      if (
        options.onSingleChunk &&
        chunks.length === 0 &&
        chunk !== undefined &&
        typeof chunk !== 'function'
      ) {
        const buffer =
          typeof chunk === 'string'
            ? Buffer.from(chunk, typeof encoding === 'string' ? (encoding as BufferEncoding) : 'utf8')
            : Buffer.isBuffer(chunk)
              ? chunk
              : undefined
        if (buffer && buffer.length <= options.maxSize) options.onSingleChunk(buffer)
      }
      onHead(this.statusCode, undefined)
    }
    record(chunk, encoding)
    if (silent()) {
      const callback = [chunk, encoding, cb].find((a) => typeof a === 'function')
      finish(true)
      if (typeof callback === 'function') process.nextTick(callback as WriteCallback)
      return this
    }
    const result = (originalEnd as (...a: unknown[]) => ServerResponse).call(this, chunk, encoding, cb)
    // Not ended yet: a middleware inside holds end() back; 'finish' (or 'close') settles it.
    if (this.writableEnded) finish(true)
    return result
  } as ServerResponse['end']

  return {
    done,
    original: {
      writeHead: originalWriteHead,
      end: (chunk?: Buffer | string) => {
        ;(originalEnd as (...a: unknown[]) => ServerResponse).call(res, chunk)
      },
    },
  }
}

/**
 * Adds the headers passed to `writeHead(status, headers)` (object or flat array form). Node keeps
 * them out of `res.getHeaders()` when nothing was set with `setHeader` before, so whoever records
 * a response must take them from the call.
 */
export function mergeHeaderArgument(into: HeaderMap, extra: unknown): void {
  if (!extra || typeof extra !== 'object') return
  if (Array.isArray(extra)) {
    // Flat [name, value, name, value] or [[name, value], ...].
    if (extra.length > 0 && Array.isArray(extra[0])) {
      for (const pair of extra as Array<[string, string]>)
        into[String(pair[0]).toLowerCase()] = String(pair[1])
    } else {
      for (let i = 0; i + 1 < extra.length; i += 2)
        into[String(extra[i]).toLowerCase()] = String(extra[i + 1])
    }
    return
  }
  for (const [name, value] of Object.entries(extra as OutgoingHttpHeaders)) {
    if (value !== undefined) into[name.toLowerCase()] = value as HeaderMap[string]
  }
}

function stripHeaderArgument(extra: unknown, strip: readonly string[]): unknown {
  if (!extra || typeof extra !== 'object' || strip.length === 0) return extra
  if (Array.isArray(extra)) {
    if (extra.length > 0 && Array.isArray(extra[0])) {
      return (extra as Array<[string, string]>).filter(
        (pair) => !strip.includes(String(pair[0]).toLowerCase()),
      )
    }
    const out: unknown[] = []
    for (let i = 0; i + 1 < extra.length; i += 2) {
      if (!strip.includes(String(extra[i]).toLowerCase())) out.push(extra[i], extra[i + 1])
    }
    return out
  }
  const out: Record<string, unknown> = {}
  for (const [name, value] of Object.entries(extra as Record<string, unknown>)) {
    if (!strip.includes(name.toLowerCase())) out[name] = value
  }
  return out
}
