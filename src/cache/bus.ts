import { randomUUID } from 'node:crypto'
import type { Redkit } from '../kit.js'

/** What one instance tells the others. `i` is the sender, so it can skip its own messages. */
export type BusMessage =
  | { i: string; t: 'keys'; k: string[] }
  | { i: string; t: 'tags'; v: Record<string, number> }
  | { i: string; t: 'clear'; p: string }

/**
 * The invalidation bus: one pub/sub channel per kit prefix on the hub's subscriber connection.
 * Every write, delete, purge, clear and tag invalidation is published, so each instance drops
 * what its L1 holds and wakes callers waiting for a key.
 */
export class CacheBus {
  readonly id = randomUUID()
  readonly channel: string
  readonly #kit: Redkit
  readonly #onMessage: (message: BusMessage) => void
  readonly #onReconnect: () => void
  #subscribed: Promise<void> | null = null
  #unsubscribe: (() => Promise<void>) | null = null

  constructor(kit: Redkit, channel: string, onMessage: (m: BusMessage) => void, onReconnect: () => void) {
    this.#kit = kit
    this.channel = channel
    this.#onMessage = onMessage
    this.#onReconnect = onReconnect
  }

  /**
   * Subscribes once; a failed SUBSCRIBE is reported as a kit `error` event and retried every
   * second until it succeeds (then memory is dropped, as after any outage).
   */
  start(): Promise<void> {
    this.#subscribed ??= this.#start()
    return this.#subscribed
  }

  async #start(attempt = 0): Promise<void> {
    if (this.#kit.hub.closed) return
    try {
      this.#unsubscribe = await this.#kit.hub.subscribe(this.channel, (raw) => this.#receive(raw))
      // The subscription is live now, so every later `ready` follows an outage during which
      // messages may have been missed.
      this.#kit.hub.dedicated('subscriber').on('ready', this.#onReconnect)
      // Whatever memory took in while no subscription listened may have missed invalidations.
      if (attempt > 0) this.#onReconnect()
    } catch (error) {
      this.#kit.events.emit('error', { error: error as Error, connection: 'cache-bus' })
      // Without the bus this instance would miss every invalidation: keep trying, quietly.
      const retry = setTimeout(() => {
        this.#subscribed = this.#start(attempt + 1)
      }, 1000)
      retry.unref()
    }
  }

  #receive(raw: string): void {
    let message: BusMessage
    try {
      message = JSON.parse(raw) as BusMessage
    } catch {
      return
    }
    if (message.i === this.id) return
    this.#onMessage(message)
  }

  /** Publishes to every instance (fire and forget: a lost message only delays L1 freshness). */
  publish(message: BusMessage): Promise<void> {
    return this.#kit.hub
      .exec((redis) => redis.publish(this.channel, JSON.stringify(message)))
      .then(
        () => undefined,
        (error: unknown) => {
          this.#kit.events.emit('error', { error: error as Error, connection: 'cache-bus' })
        },
      )
  }

  async stop(): Promise<void> {
    await this.#unsubscribe?.().catch(() => undefined)
  }
}
