import { Bus } from '../connection/bus.js'
import type { Redkit } from '../kit.js'

/** What one instance tells the others. `i` is the sender, so it can skip its own messages. */
export type BusMessage =
  /**
   * Keys written or deleted. `e`: the identity of the entry written (one key written); `d`: the
   * keys were deleted (a purge), not written.
   */
  | { i: string; t: 'keys'; k: string[]; e?: string; d?: 1 }
  | { i: string; t: 'tags'; v: Record<string, number> }
  | { i: string; t: 'clear'; p: string }

/**
 * The invalidation bus: one pub/sub channel per kit prefix on the hub's subscriber connection.
 * Every write, delete, purge, clear and tag invalidation is published, so each instance drops
 * what its L1 holds and wakes callers waiting for a key. A lost message only delays L1 freshness.
 */
export class CacheBus extends Bus<BusMessage> {
  constructor(kit: Redkit, channel: string, onMessage: (m: BusMessage) => void, onReconnect: () => void) {
    super(kit, channel, 'cache-bus', onMessage, onReconnect)
  }
}
