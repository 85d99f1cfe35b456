import { createHash } from 'node:crypto'
import type { RedisClient } from '../connection/hub.js'

/**
 * A Lua script run with EVALSHA, falling back to EVAL once when the server does not know it yet
 * (first use, restart, failover to a replica that never saw it). Works on standalone, Sentinel
 * and Cluster (on Cluster every key of one call must share a hash tag).
 *
 * @example
 * const incrTo = new LuaScript(`return redis.call('INCRBY', KEYS[1], ARGV[1])`)
 * await kit.hub.exec((redis) => incrTo.run(redis, [key], [5]))
 */
export class LuaScript {
  readonly lua: string
  readonly sha: string

  constructor(lua: string) {
    this.lua = lua
    this.sha = createHash('sha1').update(lua).digest('hex')
  }

  /** Runs the script with `keys` and `args` on `client`. */
  async run(
    client: RedisClient,
    keys: readonly string[],
    args: ReadonlyArray<string | number | Buffer>,
  ): Promise<unknown> {
    try {
      return await client.evalsha(this.sha, keys.length, ...keys, ...args)
    } catch (error) {
      if (!(error instanceof Error) || !error.message.startsWith('NOSCRIPT')) throw error
      return client.eval(this.lua, keys.length, ...keys, ...args)
    }
  }

  /**
   * Runs the script with EVAL, its whole text: for a command that must work in one go whether or
   * not the server knows the script, such as an undo sent to a stalled server (its EVALSHA could
   * time out before NOSCRIPT comes back, and then no EVAL would follow).
   */
  eval(
    client: RedisClient,
    keys: readonly string[],
    args: ReadonlyArray<string | number | Buffer>,
  ): Promise<unknown> {
    return client.eval(this.lua, keys.length, ...keys, ...args)
  }
}
