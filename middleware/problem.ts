import type { Response } from 'express'

/** An RFC 9457 problem details object. */
export interface Problem {
  /** HTTP status code. */
  status: number
  /** Short, human-readable summary of the problem type. */
  title: string
  /** Explanation specific to this occurrence. */
  detail?: string
  /** URI identifying the problem type. @default 'about:blank' */
  type?: string
  /** Extension members (for example `retryAfter`). */
  [extension: string]: unknown
}

/**
 * Sends an `application/problem+json` response (RFC 9457). Never includes a stack trace.
 *
 * @example
 * sendProblem(res, { status: 503, title: 'Session store unavailable', detail: 'Try again shortly.' })
 */
export function sendProblem(res: Response, problem: Problem): void {
  if (res.headersSent) {
    res.end()
    return
  }
  const body = JSON.stringify({ type: 'about:blank', ...problem })
  res.statusCode = problem.status
  res.setHeader('Content-Type', 'application/problem+json; charset=utf-8')
  res.setHeader('Content-Length', Buffer.byteLength(body))
  res.setHeader('Cache-Control', 'no-store')
  res.end(body)
}

/**
 * Sends `503 Service Unavailable` as problem+json with `Retry-After: 1`: what every middleware that
 * fails closed answers when Redis cannot be reached.
 *
 * @example
 * if (isConnectionError(error)) return sendUnavailable(res, 'Session store unavailable', 'Try again shortly.')
 */
export function sendUnavailable(res: Response, title: string, detail: string): void {
  if (!res.headersSent) res.setHeader('Retry-After', '1')
  sendProblem(res, { status: 503, title, detail })
}
