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
 * - `disconnectTimeout` 50 ms: do not wait 2 s for a dying or hung master's socket to close;
 * - capped, jittered retries towards sentinels and masters (the master's capped at 200 ms: a
 *   sentinel lookup is cheap, and the promoted replica is then found within 200 ms);
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
    // While the master is away the client is between retries, with no failover detector
    // listening: a short cap means it asks the sentinels again soon after the promotion.
    retryStrategy: backoff(Math.min(config.maxRetryDelayMs, 200)),
    failoverDetector: true,
    disconnectTimeout: 50,
    sentinelRetryStrategy: retry,
    sentinelReconnectStrategy: backoff(Math.max(config.maxRetryDelayMs, 2000)),
    sentinelCommandTimeout: config.connectTimeoutMs,
    reconnectOnError: (error) => (error.message.startsWith('READONLY') ? 2 : false),
    ...options,
  }
}
