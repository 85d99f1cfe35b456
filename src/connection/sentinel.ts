import type { RedisOptions } from 'ioredis'
import type { ResolvedConfig } from './config.js'
import { backoff } from './retry.js'

/**
 * ioredis options for a Sentinel group, tuned for fast failover; every value can be overridden in
 * the Sentinel config.
 *
 * - `failoverDetector`: subscribe to `+switch-master` on the sentinels and reconnect at once,
 *   instead of waiting for the old master's socket to time out (matters when it hangs rather than
 *   dies);
 * - `disconnectTimeout` 200 ms: do not wait 2 s for a dying master's socket to close;
 * - capped, jittered retries towards sentinels and masters;
 * - `reconnectOnError` on READONLY: a demoted master answers writes with READONLY; reconnect
 *   (asking the sentinels again) and resend the command.
 */
export function sentinelOptions(
  options: RedisOptions,
  common: RedisOptions,
  config: ResolvedConfig,
): RedisOptions {
  const retry = backoff(config.maxRetryDelayMs)
  return {
    ...common,
    failoverDetector: true,
    disconnectTimeout: 200,
    sentinelRetryStrategy: retry,
    sentinelReconnectStrategy: backoff(Math.max(config.maxRetryDelayMs, 2000)),
    sentinelCommandTimeout: config.connectTimeoutMs,
    reconnectOnError: (error) => (error.message.startsWith('READONLY') ? 2 : false),
    ...options,
  }
}
