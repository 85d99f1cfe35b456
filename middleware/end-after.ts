import type { Response } from 'express'
import type { Redkit } from '../src/index.js'

/**
 * Calls the response's real `end` with `args` once `before` has settled (a lease released, a
 * record stored), for middleware that acts before the last bytes go out. What that `end` throws
 * (a status out of range, a chunk of the wrong type) can no longer reach the handler, which has
 * returned: it is reported as an `error` event and the connection is dropped, instead of an
 * unhandled rejection that stops the process and a request left hanging. `before` must not reject.
 */
export function endAfter(
  kit: Redkit,
  res: Response,
  end: Response['end'],
  args: unknown[],
  before: Promise<unknown>,
  connection: string,
): void {
  void before.then(() => endNow(kit, res, end, args, connection))
}

/**
 * Calls the response's real `end` with `args` from a callback (a save that settled), where what it
 * throws would otherwise become an unhandled rejection or exception: reported as an `error` event,
 * with the connection dropped so that the request does not hang.
 */
export function endNow(
  kit: Redkit,
  res: Response,
  end: Response['end'],
  args: unknown[],
  connection: string,
): void {
  try {
    ;(end as (...a: unknown[]) => Response).apply(res, args)
  } catch (error) {
    kit.events.emit('error', { error: error as Error, connection })
    res.destroy(error as Error)
  }
}
