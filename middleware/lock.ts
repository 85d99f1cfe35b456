import type { Request, RequestHandler, Response } from 'express'
import type { Duration, Lock, Locks, Redkit } from '../src/index.js'
import { ConfigError, LockBusyError, LockUnavailableError, parseDuration } from '../src/index.js'
import { endAfter } from './end-after.js'
import { sendProblem, sendUnavailable } from './problem.js'

/** Options of {@link lockRoute}. */
export interface LockRouteOptions {
  /**
   * The resource(s) this request locks, for example `(req) => \`order:${req.params.id}\``.
   * Return `null` or `undefined` to let the request through without a lock.
   */
  resource: (req: Request) => string | readonly string[] | null | undefined
  /**
   * Lease length; extended while the request runs, released when the response ends. If the client
   * goes away first, the lease is no longer extended: it is released when the handler ends its
   * response, or runs out (firing `res.locals.lock.signal`).
   * @default '30s'
   */
  ttl?: Duration
  /**
   * How long a request waits for a held resource before 409; 0 answers 409 at once.
   * @default 0
   */
  wait?: Duration
  /**
   * The `Locks` instance to use, for example one made by `createLocks(kit, { servers })`.
   * @default kit.locks
   */
  locks?: Locks
}

interface ResolvedLockRoute {
  resource: LockRouteOptions['resource']
  ttlMs: number
  waitMs: number
  locks: Locks | undefined
}

function resolveLockRouteOptions(options: LockRouteOptions): ResolvedLockRoute {
  if (!options || typeof options.resource !== 'function') {
    throw new ConfigError(
      'lockRoute.resource',
      'must be a function of the request',
      "write (req) => 'order:' + req.params.id",
    )
  }
  const ttlMs = parseDuration(options.ttl ?? '30s', 'lockRoute.ttl')
  if (ttlMs < 10)
    throw new ConfigError('lockRoute.ttl', `must be at least 10 ms, got ${ttlMs}`, "write '30s'")
  return {
    resource: options.resource,
    ttlMs,
    waitMs: parseDuration(options.wait ?? 0, 'lockRoute.wait'),
    locks: options.locks,
  }
}

/**
 * Lets one request at a time work on a resource across every instance: while one request holds
 * it, another gets 409 problem+json with `Retry-After` (or waits up to `wait` for it). When Redis
 * cannot be reached it answers 503 (fails closed). The handler finds the lock (with its fencing
 * token) in `res.locals.lock`.
 *
 * @example
 * app.post('/orders/:id/ship', lockRoute(kit, { resource: (req) => `order:${req.params.id}`, ttl: '10s' }), ship)
 */
export function lockRoute(kit: Redkit, options: LockRouteOptions): RequestHandler {
  const resolved = resolveLockRouteOptions(options)
  const retry = resolved.waitMs > 0 ? { attempts: 0, delay: 100, jitter: 50 } : false
  return async function lockRouteMiddleware(req, res, next) {
    let resource: string | readonly string[] | null | undefined
    try {
      resource = resolved.resource(req)
    } catch (error) {
      next(error)
      return
    }
    if (resource === null || resource === undefined) {
      next()
      return
    }
    const locks = resolved.locks ?? kit.locks
    // A client that goes away while waiting should not keep a retry loop running.
    const gone = new AbortController()
    const onClose = () => gone.abort()
    res.once('close', onClose)
    if (res.destroyed) gone.abort()
    let lock: Lock
    try {
      lock = await locks.acquire(resource, {
        ttl: resolved.ttlMs,
        retry,
        wait: resolved.waitMs > 0 ? resolved.waitMs : undefined,
        signal: gone.signal,
      })
    } catch (error) {
      res.off('close', onClose)
      if (gone.signal.aborted) return
      if (error instanceof LockBusyError) {
        res.setHeader('Retry-After', String(Math.max(1, Math.ceil((error.retryAfterMs ?? 1000) / 1000))))
        sendProblem(res, {
          status: 409,
          title: 'Resource is locked',
          detail: `${error.resource} is being changed by another request; retry later.`,
        })
        return
      }
      if (error instanceof LockUnavailableError) {
        sendUnavailable(res, 'Lock service unavailable', 'Try again shortly.')
        return
      }
      next(error)
      return
    }
    res.off('close', onClose)
    if (gone.signal.aborted) {
      // Gone while the lease was being granted: its close has passed, so nothing would ever end
      // this response or let the lease go. The handler does not run, as for a client gone while
      // waiting.
      locks.release(lock).catch((error: unknown) => {
        kit.events.emit('error', { error: error as Error, connection: 'lock' })
      })
      return
    }
    const hold = locks.hold(lock)
    let releasing: Promise<void> | undefined
    const release = () => {
      releasing ??= hold.stop()
      return releasing
    }
    let ended = false
    // The lease is released before the response's last bytes go out, so a client's next request
    // never finds the resource still held by the request it just got an answer to.
    const end = res.end
    res.end = function lockRouteEnd(this: Response, ...args: unknown[]) {
      res.end = end
      ended = true
      endAfter(kit, this, end, args, release(), 'lock')
      return this
    } as Response['end']
    // A client that goes away (a proxy timeout) does not stop the handler: freeing the resource
    // now would let the client's retry run beside it. The lease is kept but no longer extended,
    // so it is released when the handler ends its response, or runs out within one ttl, firing
    // lock.signal for a handler still at work.
    res.once('close', () => {
      if (!ended) hold.lapse()
    })
    res.locals.lock = lock
    next()
  }
}
