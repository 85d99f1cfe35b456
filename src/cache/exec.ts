import { type RedisClient, withTimeout } from '../connection/hub.js'
import { ConnectionError } from '../errors.js'
import type { Redkit } from '../kit.js'

/**
 * `kit.hub.exec()` bounded by the command timeout from the moment of the call. Right after a
 * server dies ioredis may hold a command for longer (queued for reconnect, then timed out);
 * a cache must fail open within the timeout, so it stops waiting and reports `ConnectionError`.
 */
export function boundedExec<T>(kit: Redkit, operation: (client: RedisClient) => Promise<T>): Promise<T> {
  return withTimeout(kit.hub.exec(operation), kit.hub.commandTimeoutMs).then(undefined, toConnectionError)
}

function toConnectionError(error: unknown): never {
  if (
    error instanceof Error &&
    error.message === 'Command timed out' &&
    !(error instanceof ConnectionError)
  ) {
    throw new ConnectionError('Redis did not answer within the command timeout.', { cause: error })
  }
  throw error
}
