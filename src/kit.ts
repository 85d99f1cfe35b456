import { type RedkitOptions, resolveConfig } from './connection/config.js'
import { ConnectionHub, type HealthReport, type RedisClient } from './connection/hub.js'
import { type RedkitEventName, RedkitEvents, type RedkitListener } from './events.js'
import { KeySpace } from './keys.js'

/**
 * One kit per process: the shared Redis connection hub, the key space and the event bus, plus
 * every module (created on first use, all on the same hub).
 */
export class Redkit {
  /** Connections, circuit breaker, pub/sub; modules run their commands through `hub.exec()`. */
  readonly hub: ConnectionHub
  /** Key builder: `kit.keys.module('orders').key(id)` gives `prefix:orders:<id>`. */
  readonly keys: KeySpace
  /** Typed events of the connection and of every module. */
  readonly events: RedkitEvents
  /** First segment of every key. */
  readonly prefix: string

  constructor(options: RedkitOptions = {}) {
    const config = resolveConfig(options)
    this.prefix = config.prefix
    this.events = new RedkitEvents()
    this.keys = new KeySpace(config.prefix)
    this.hub = new ConnectionHub(config, this.events)
  }

  // Modules: each is created on first use, on this kit's hub. Add one lazy getter per module here.

  /** The shared, auto-pipelined command client, for the app's own commands. */
  get redis(): RedisClient {
    return this.hub.client
  }

  /** Listens to a kit event; returns a function that removes the listener. */
  on<K extends RedkitEventName>(event: K, listener: RedkitListener<K>): () => void {
    return this.events.on(event, listener)
  }

  /** Connected state, role, ping latency and, for Sentinel, the current master. Never throws. */
  health(): Promise<HealthReport> {
    return this.hub.health()
  }

  /**
   * Flushes modules (analytics batches, ...), then closes every connection the kit owns once
   * in-flight commands are answered. A client passed in by the app is left open. Safe to call twice.
   */
  async close(): Promise<void> {
    await this.hub.close()
    this.events.clear()
  }
}

/**
 * Creates the kit. Never throws for an unreachable server (commands then fail fast with
 * `ConnectionError` and the kit reconnects by itself); throws `ConfigError` for invalid options.
 *
 * @example
 * const kit = createRedkit({ redis: process.env.REDIS_URL, prefix: 'shop' })
 * await kit.redis.set('greeting', 'hello')
 * await kit.close()
 */
export function createRedkit(options: RedkitOptions = {}): Redkit {
  return new Redkit(options)
}
