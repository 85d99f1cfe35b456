import { startRedis } from '../../test/helpers/redis-server.js'
import { pin } from './env.js'

/** A throwaway redis-server for a bench group, pinned to core 1 with the load generator. */
export async function benchRedis(): Promise<{ url: string; stop: () => Promise<void> }> {
  const redis = await startRedis()
  pin(redis.server.pid, 1)
  return { url: redis.url, stop: redis.stop }
}
