import { randomUUID } from 'node:crypto'
import type { Redkit } from '../kit.js'

/** What every bus message carries: `i` is the sender, so it can skip its own messages. */
export interface BusEnvelope {
  i: string
}

/**
 * One pub/sub channel on the hub's subscriber connection, through which the instances of an app
 * tell each other what changed (the cache's invalidations, the rate limiter's resets). `label`
 * names it in the kit's `error` events. When a message may have been missed (the subscription came
 * up late or the subscriber reconnected), `onReconnect` runs so memory can drop what it holds.
 */
export class Bus<M extends BusEnvelope> {
  readonly id = randomUUID()
  readonly channel: string
  readonly #kit: Redkit
  readonly #label: string
  readonly #onMessage: (message: M) => void
  readonly #onReconnect: () => void
  #subscribed: Promise<void> | null = null
  #unsubscribe: (() => Promise<void>) | null = null

  constructor(
    kit: Redkit,
    channel: string,
    label: string,
    onMessage: (m: M) => void,
    onReconnect: () => void,
  ) {
    this.#kit = kit
    this.channel = channel
    this.#label = label
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
      // Whatever memory took in while no subscription listened may have missed messages.
      if (attempt > 0) this.#onReconnect()
    } catch (error) {
      this.#kit.events.emit('error', { error: error as Error, connection: this.#label })
      // Without the bus this instance would miss every message: keep trying, quietly.
      const retry = setTimeout(() => {
        this.#subscribed = this.#start(attempt + 1)
      }, 1000)
      retry.unref()
    }
  }

  #receive(raw: string): void {
    let message: M
    try {
      message = JSON.parse(raw) as M
    } catch {
      return
    }
    if (typeof message !== 'object' || message === null || message.i === this.id) return
    this.#onMessage(message)
  }

  /** Publishes to every instance (fire and forget: a lost message is reported, never thrown). */
  publish(message: M): Promise<void> {
    return this.#kit.hub
      .exec((redis) => redis.publish(this.channel, JSON.stringify(message)))
      .then(
        () => undefined,
        (error: unknown) => {
          this.#kit.events.emit('error', { error: error as Error, connection: this.#label })
        },
      )
  }

  async stop(): Promise<void> {
    await this.#unsubscribe?.().catch(() => undefined)
  }
}
