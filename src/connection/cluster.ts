import type { ClusterOptions, RedisOptions } from 'ioredis'
import type { ResolvedConfig } from './config.js'
import { backoff } from './retry.js'

/**
 * ioredis Cluster options: auto-pipelining per node, the kit's timeouts on every node connection,
 * capped jittered retries; every value can be overridden in the Cluster config.
 */
export function clusterOptions(
  options: ClusterOptions,
  common: RedisOptions,
  config: ResolvedConfig,
): ClusterOptions {
  const { enableAutoPipelining, retryStrategy: _nodeRetry, ...nodeOptions } = common
  return {
    enableAutoPipelining,
    clusterRetryStrategy: backoff(config.maxRetryDelayMs),
    slotsRefreshTimeout: config.connectTimeoutMs,
    ...options,
    redisOptions: { ...nodeOptions, ...options.redisOptions },
  }
}
