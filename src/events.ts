import { EventEmitter } from 'node:events'

/** Address of a Redis server. */
export interface RedisAddress {
  host: string
  port: number
}

/**
 * Every event the kit emits, by name. Modules add their own entries by augmenting this interface
 * (`declare module '../events.js' { interface RedkitEventMap { 'cache:hit': {...} } }`), so one
 * listener API covers the whole kit.
 */
export interface RedkitEventMap {
  /** The command connection is ready (first connect and every reconnect). */
  ready: { kind: TopologyKind; address?: RedisAddress }
  /** A connection error; the kit keeps retrying. Never thrown: listen here to log it. */
  error: { error: Error; connection: string }
  /** The command connection is lost and will retry after `delayMs`. */
  reconnecting: { delayMs: number }
  /** Sentinel reported a new master and the kit now talks to it. */
  failover: { from?: RedisAddress; to: RedisAddress }
  /**
   * One module operation through `hub.exec()` finished (measured only while someone listens):
   * the source of the Redis command latency metric.
   */
  command: { durationMs: number; ok: boolean }
  /** The circuit breaker changed state. */
  breaker: { state: 'open' | 'closed'; failures: number }
}

/** How the kit reaches Redis. */
export type TopologyKind = 'standalone' | 'sentinel' | 'cluster'

/** Name of a kit event. */
export type RedkitEventName = keyof RedkitEventMap

/** A listener for one kit event. */
export type RedkitListener<K extends RedkitEventName> = (payload: RedkitEventMap[K]) => void

/**
 * Typed event bus shared by every module of a kit. Emitting `error` with no listener is silent
 * (plain Node emitters would throw and crash the process).
 */
export class RedkitEvents {
  readonly #emitter = new EventEmitter()

  constructor() {
    this.#emitter.setMaxListeners(100)
  }

  /** Adds a listener. Returns a function that removes it. */
  on<K extends RedkitEventName>(event: K, listener: RedkitListener<K>): () => void {
    this.#emitter.on(event, listener)
    return () => this.off(event, listener)
  }

  /** Adds a listener that runs once. */
  once<K extends RedkitEventName>(event: K, listener: RedkitListener<K>): () => void {
    const remove = this.on(event, (payload) => {
      remove()
      listener(payload)
    })
    return remove
  }

  /** Removes a listener. */
  off<K extends RedkitEventName>(event: K, listener: RedkitListener<K>): void {
    this.#emitter.off(event, listener)
  }

  /** Emits an event; a listener that throws is isolated and does not reach the emitter. */
  emit<K extends RedkitEventName>(event: K, payload: RedkitEventMap[K]): void {
    if (this.#emitter.listenerCount(event) === 0) return
    for (const listener of this.#emitter.listeners(event) as RedkitListener<K>[]) {
      try {
        listener(payload)
      } catch {
        // A broken listener must not break a request or the connection state machine.
      }
    }
  }

  /** True when someone listens, so hot paths can skip building payloads. */
  has(event: RedkitEventName): boolean {
    return this.#emitter.listenerCount(event) > 0
  }

  /** Removes every listener (used by `kit.close()`). */
  clear(): void {
    this.#emitter.removeAllListeners()
  }
}
