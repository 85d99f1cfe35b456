import { Cluster, Redis, type RedisOptions } from 'ioredis'
import { ConnectionError } from '../errors.js'
import type { RedisAddress, RedkitEvents, TopologyKind } from '../events.js'
import { CircuitBreaker } from './breaker.js'
import { clusterOptions } from './cluster.js'
import type { ResolvedConfig } from './config.js'
import { backoff } from './retry.js'
import { sentinelOptions } from './sentinel.js'

/** Either kind of ioredis client. */
export type RedisClient = Redis | Cluster

/** A module command waiting for Redis. */
interface InFlight {
  started: number
  reject: (error: unknown) => void
  /** Sent if the call fails for want of an answer (see {@link ConnectionHub.exec}). */
  undo: ((client: RedisClient) => Promise<unknown>) | undefined
}

/** A pub/sub message handler. `message` is the raw payload. */
export type MessageHandler = (message: string, channel: string) => void

const CONNECTION_MESSAGES =
  /Command timed out|Connection is closed|Stream isn't writeable|max retries per request|ECONNREFUSED|ECONNRESET|EPIPE|ETIMEDOUT|EHOSTUNREACH|Failed to refresh slots cache|None of startup nodes is available|Cluster isn't ready|All sentinels are unreachable|Connection in subscriber mode/i
// MOVED/ASK reach the caller only when ioredis could not follow them: the survivors of a Cluster
// still assign the slot to a node that is down.
const UNAVAILABLE_REPLIES = /^(LOADING|READONLY|MASTERDOWN|CLUSTERDOWN|TRYAGAIN|NOREPLICAS|MOVED|ASK)\b/

/**
 * True when `error` means Redis could not be reached or cannot serve right now (as opposed to a
 * reply error such as WRONGTYPE, which is a bug in the caller).
 */
export function isConnectionError(error: unknown): boolean {
  if (error instanceof ConnectionError) return true
  if (!(error instanceof Error)) return false
  if (error.name === 'MaxRetriesPerRequestError' || error.name === 'ClusterAllFailedError') return true
  return CONNECTION_MESSAGES.test(error.message) || UNAVAILABLE_REPLIES.test(error.message)
}

/** Health of the kit's connection, as returned by `kit.health()`. */
export interface HealthReport {
  /** `'ok'` when a PING was answered within the command timeout. */
  status: 'ok' | 'down'
  kind: TopologyKind
  /** State of the shared command connection (`ready`, `connecting`, `reconnecting`, `end`, ...). */
  connection: string
  /** Round trip of the PING in milliseconds (absent when down). */
  latencyMs?: number
  /** Replication role of the server answering commands (`master`/`slave`); for Cluster, `cluster`. */
  role?: string
  /** For Sentinel (and standalone): the server the command connection talks to. */
  master?: RedisAddress
  /** For Cluster: the number of master nodes known. */
  masters?: number
  breaker: 'open' | 'closed' | 'off'
  /** Why the check failed. */
  error?: string
}

/**
 * Owns every Redis connection of a kit: one auto-pipelined command connection shared by all
 * modules, and dedicated connections (pub/sub subscriber, blocking commands) created on first use.
 * Modules run their commands through {@link ConnectionHub.exec}, which applies the circuit breaker
 * and turns connection failures into `ConnectionError`.
 */
export class ConnectionHub {
  readonly kind: TopologyKind
  /** The shared command client. */
  readonly client: RedisClient
  /** False when the app passed its own client: then `close()` leaves it open. */
  readonly owned: boolean
  readonly commandTimeoutMs: number
  readonly #events: RedkitEvents
  readonly #breaker: CircuitBreaker | null
  readonly #dedicated = new Map<string, RedisClient>()
  readonly #handlers = new Map<string, Set<MessageHandler>>()
  readonly #subscribing = new Map<string, Promise<void>>()
  readonly #inflight = new Set<InFlight>()
  readonly #sweepEveryMs: number
  #sweeper: NodeJS.Timeout | undefined
  readonly #closeHooks: Array<() => unknown> = []
  #closing: Promise<void> | null = null
  /** Set once the close hooks have run: from then on module commands are refused. */
  #ended = false
  #closeCalled = false
  #listening = false
  #master: RedisAddress | undefined

  constructor(config: ResolvedConfig, events: RedkitEvents) {
    this.#events = events
    this.commandTimeoutMs = config.commandTimeoutMs
    this.#sweepEveryMs = Math.max(5, Math.min(100, Math.round(config.commandTimeoutMs / 10)))
    this.#breaker = config.breaker
      ? new CircuitBreaker(config.breaker.threshold, config.breaker.cooldownMs, (state, failures) =>
          events.emit('breaker', { state, failures }),
        )
      : null
    const topology = config.topology
    this.kind = topology.kind
    if ('client' in topology) {
      this.client = topology.client
      this.owned = false
    } else {
      this.owned = true
      const common: RedisOptions = {
        commandTimeout: config.commandTimeoutMs,
        connectTimeout: config.connectTimeoutMs,
        retryStrategy: backoff(config.maxRetryDelayMs),
        enableAutoPipelining: config.autoPipelining,
        connectionName: `${config.prefix}:redkit`,
      }
      if (topology.kind === 'cluster') {
        this.client = new Cluster(topology.nodes, clusterOptions(topology.options, common, config))
      } else if (topology.kind === 'sentinel') {
        this.client = new Redis(sentinelOptions(topology.options, common, config))
      } else {
        this.client = new Redis({ ...common, ...topology.options })
      }
    }
    this.#watch(this.client, 'command')
  }

  /**
   * Runs one Redis operation for a module: refused at once while the circuit is open, and any
   * connection failure comes back as `ConnectionError` (reply errors pass through unchanged).
   *
   * `undo` is for an operation that claims something (a lease, a lock): a call given up on for want
   * of an answer (the command timeout, a lost connection) is not the same as one that did not run,
   * since a stalled server still runs it when it resumes, for a claimant that has gone. Then `undo`
   * is sent on the same connection, right behind it: not refused by an open circuit (which that
   * very timeout may have opened), not counted by it, never rejecting. A call refused before it was
   * sent, or answered (even with an error), has nothing to undo.
   *
   * @example
   * const value = await hub.exec((redis) => redis.get(key))
   * await hub.exec((redis) => redis.set(lease, token, 'PX', 30_000, 'NX'), (redis) => redis.del(lease))
   */
  exec<T>(
    operation: (client: RedisClient) => Promise<T>,
    undo?: (client: RedisClient) => Promise<unknown>,
  ): Promise<T> {
    // Close hooks (final flushes) still run their commands; everything after them is refused.
    if (this.#ended) return Promise.reject(new ConnectionError('The redkit kit is closed; create a new one.'))
    const breaker = this.#breaker
    if (breaker && !breaker.allow()) {
      return Promise.reject(
        new ConnectionError(
          `Redis is unavailable (circuit open after ${breaker.threshold} failures); retrying in the background.`,
        ),
      )
    }
    // The bound runs from the call, not from when ioredis sends the command: ioredis Cluster
    // queues commands without a timeout while no node is reachable, and an auto-pipeline waits
    // (untimed) behind one still in flight on a socket that just died. One sweeping timer per hub
    // enforces it, so a command costs no timer of its own.
    return new Promise<T>((resolve, reject) => {
      const call: InFlight = { started: performance.now(), reject, undo }
      this.#inflight.add(call)
      this.#sweeper ??= setInterval(this.#sweep, this.#sweepEveryMs).unref()
      let promise: Promise<T>
      try {
        promise = operation(this.client)
      } catch (error) {
        // A synchronous throw (bad arguments) still settles the breaker's trial, if this was it.
        this.#inflight.delete(call)
        reject(this.#failure(error))
        return
      }
      promise.then(
        (value) => {
          if (!this.#inflight.delete(call)) return
          this.#settled(call, true)
          resolve(value)
        },
        (error: unknown) => {
          if (!this.#inflight.delete(call)) return
          this.#settled(call, false)
          if (undo && isConnectionError(error)) this.#undo(undo)
          reject(this.#failure(error))
        },
      )
    })
  }

  /** Sends `undo` (see {@link exec}); never rejects, and never for a closed kit. */
  #undo(undo: (client: RedisClient) => Promise<unknown>): void {
    if (this.#ended) return
    try {
      undo(this.client).catch(() => undefined)
    } catch {
      // bad arguments: nothing was sent
    }
  }

  /** Fails the calls past the command timeout; calls sit in start order, so it stops at the first live one. */
  readonly #sweep = (): void => {
    const expired = performance.now() - this.commandTimeoutMs
    for (const call of this.#inflight) {
      if (call.started > expired) break
      this.#inflight.delete(call)
      this.#settled(call, false)
      if (call.undo) this.#undo(call.undo)
      call.reject(this.#failure(new Error('Command timed out')))
    }
    if (this.#inflight.size === 0 && this.#sweeper) {
      clearInterval(this.#sweeper)
      this.#sweeper = undefined
    }
  }

  #settled(call: InFlight, ok: boolean): void {
    if (ok) this.#breaker?.success()
    if (this.#events.has('command')) {
      this.#events.emit('command', { durationMs: performance.now() - call.started, ok })
    }
  }

  /** Counts a failure for the breaker and wraps connection failures in `ConnectionError`. */
  #failure(error: unknown): unknown {
    if (!isConnectionError(error)) {
      this.#breaker?.success()
      return error
    }
    this.#breaker?.failure()
    if (error instanceof ConnectionError) return error
    return new ConnectionError(`Redis did not answer: ${(error as Error).message}.`, { cause: error })
  }

  /** State of the circuit breaker. */
  get breakerState(): 'open' | 'closed' | 'off' {
    return this.#breaker?.state ?? 'off'
  }

  /**
   * A dedicated connection for `purpose` (for example `'subscriber'` or `'blocking'`), created on
   * first use from the command connection's settings, reused afterwards, closed by `close()`.
   */
  dedicated(purpose: string): RedisClient {
    let client = this.#dedicated.get(purpose)
    if (!client) {
      if (this.#ended) throw new ConnectionError('The redkit kit is closed; create a new one.')
      client = duplicate(this.client, purpose)
      this.#dedicated.set(purpose, client)
      this.#watch(client, purpose)
    }
    return client
  }

  /**
   * Subscribes `handler` to `channel` on the shared subscriber connection. Many handlers may share
   * one channel; the returned function unsubscribes this handler.
   */
  async subscribe(channel: string, handler: MessageHandler): Promise<() => Promise<void>> {
    const subscriber = this.dedicated('subscriber')
    if (!this.#listening) {
      this.#listening = true
      subscriber.on('message', (ch: string, message: string) => {
        for (const h of this.#handlers.get(ch) ?? []) {
          try {
            h(message, ch)
          } catch (error) {
            this.#events.emit('error', { error: error as Error, connection: 'subscriber' })
          }
        }
      })
    }
    let subscribed = this.#subscribing.get(channel)
    if (!subscribed) {
      subscribed = withTimeout(subscriber.subscribe(channel), this.commandTimeoutMs).then(
        () => undefined,
        (error: unknown) => {
          // Forget the channel so that the next call tries SUBSCRIBE again.
          this.#subscribing.delete(channel)
          this.#handlers.delete(channel)
          throw new ConnectionError(`Could not subscribe to ${channel}: ${(error as Error).message}.`, {
            cause: error,
          })
        },
      )
      this.#subscribing.set(channel, subscribed)
      this.#handlers.set(channel, new Set())
    }
    await subscribed
    let handlers = this.#handlers.get(channel)
    if (!handlers) {
      handlers = new Set()
      this.#handlers.set(channel, handlers)
    }
    handlers.add(handler)
    return async () => {
      const set = this.#handlers.get(channel)
      if (!set?.delete(handler) || set.size > 0) return
      this.#handlers.delete(channel)
      this.#subscribing.delete(channel)
      if (subscriber.status === 'ready') await subscriber.unsubscribe(channel).catch(() => undefined)
    }
  }

  /**
   * Visits every key matching `pattern` with SCAN (never KEYS) on every master of a Cluster, or on
   * the one server. Each SCAN step is one bounded command, so a large key space takes as many
   * round trips as it needs without tripping the command timeout; `visit` gets each step's keys.
   *
   * @example
   * await hub.scan(kit.keys.module('cache').pattern(), (keys) => hub.exec((r) => r.unlink(...keys)))
   */
  async scan(pattern: string, visit: (keys: string[]) => unknown, count = 500): Promise<void> {
    const nodes: Redis[] = isCluster(this.client) ? this.client.nodes('master') : [this.client]
    await Promise.all(
      nodes.map(async (node) => {
        let cursor = '0'
        do {
          const [next, keys] = await this.exec(() => node.scan(cursor, 'MATCH', pattern, 'COUNT', count))
          cursor = next
          if (keys.length > 0) await visit(keys)
        } while (cursor !== '0')
      }),
    )
  }

  /**
   * Registers work to run at the start of `close()`, while connections are still open (flushes).
   * Returns a function that unregisters it (for something closed on its own before the kit).
   */
  onClose(hook: () => unknown): () => void {
    this.#closeHooks.push(hook)
    return () => {
      const at = this.#closeHooks.indexOf(hook)
      if (at >= 0) this.#closeHooks.splice(at, 1)
    }
  }

  /** True once `close()` was called. */
  get closed(): boolean {
    return this.#closeCalled
  }

  /**
   * Runs close hooks, then closes every connection the hub owns after their in-flight commands
   * have been answered (bounded by the command timeout). Safe to call more than once.
   */
  close(): Promise<void> {
    // Set before the hooks run (they start synchronously), so they already see a closed kit.
    this.#closeCalled = true
    this.#closing ??= this.#close()
    return this.#closing
  }

  async #close(): Promise<void> {
    // A copy: a hook may unregister itself (an outbound queue does), which must not skip the next.
    for (const hook of [...this.#closeHooks]) {
      try {
        await hook()
      } catch (error) {
        this.#events.emit('error', { error: error as Error, connection: 'close' })
      }
    }
    this.#ended = true
    const clients = [...this.#dedicated.values()]
    if (this.owned) clients.push(this.client)
    await Promise.all(clients.map((client) => this.#end(client)))
    this.#dedicated.clear()
    this.#handlers.clear()
    this.#subscribing.clear()
  }

  async #end(client: RedisClient): Promise<void> {
    // A connection being closed must not subscribe again: if the answer to its ready check arrives
    // after disconnect() (close() came while it reconnected), ioredis would re-subscribe on ready
    // over the closing socket, and that command fails with a rejection nothing can catch.
    if (!isCluster(client)) client.options.autoResubscribe = false
    // Auto-pipelined commands are written on the next turn of the event loop; let them go out
    // before QUIT so that commands issued just before close() are answered, not refused.
    await new Promise((resolve) => setImmediate(resolve))
    const queued = (client as unknown as { offlineQueue?: { length: number } }).offlineQueue?.length ?? 0
    if ((client.status === 'connecting' || client.status === 'connect') && queued > 0) {
      // Commands queued while connecting are still owed an answer: give the connection the
      // command timeout to become ready.
      await withTimeout(new Promise((resolve) => client.once('ready', resolve)), this.commandTimeoutMs).catch(
        () => undefined,
      )
    }
    if (client.status === 'ready') {
      // QUIT is answered after every command sent before it, so in-flight work completes.
      await withTimeout(client.quit(), this.commandTimeoutMs).catch(() => undefined)
    }
    // disconnect() also ends the sentinel connections of the failover detector, which QUIT leaves
    // open (they would keep the process alive).
    // Between attempts there is no socket: disconnect() only cancels the retry and no 'end' follows.
    if (client.status === 'end' || client.status === 'reconnecting' || client.status === 'wait') {
      client.disconnect()
      return
    }
    const ended = new Promise((resolve) => client.once('end', resolve))
    client.disconnect()
    await withTimeout(ended, this.commandTimeoutMs).catch(() => undefined)
  }

  /** Connected state, role, ping latency and, for Sentinel, the current master. */
  async health(): Promise<HealthReport> {
    const report: HealthReport = {
      status: 'down',
      kind: this.kind,
      connection: this.client.status,
      breaker: this.breakerState,
    }
    try {
      const started = performance.now()
      await withTimeout(this.client.ping(), this.commandTimeoutMs)
      report.latencyMs = Math.round((performance.now() - started) * 1000) / 1000
      report.status = 'ok'
      if (isCluster(this.client)) {
        report.role = 'cluster'
        report.masters = (this.client as Cluster).nodes('master').length
      } else {
        const role = (await withTimeout(this.client.call('ROLE'), this.commandTimeoutMs)) as unknown[]
        report.role = String(role[0])
        report.master = this.#master ?? streamAddress(this.client)
      }
    } catch (error) {
      report.error = (error as Error).message
    }
    report.connection = this.client.status
    return report
  }

  #revive(client: RedisClient): void {
    if (this.#closeCalled) return
    setTimeout(() => {
      if (!this.#closeCalled && client.status === 'end') client.connect().catch(() => undefined)
    }, REVIVE_AFTER_MS).unref()
  }

  #watch(client: RedisClient, purpose: string): void {
    client.on('error', (error: Error) => this.#events.emit('error', { error, connection: purpose }))
    // ioredis ends a Sentinel client for good when a +switch-master notice interrupts its lookup of
    // the master (the pending connect fails with "Connection is closed" and no retry follows). A kit
    // recovers by itself: a client of ours that ends while the kit is open connects again.
    if (purpose !== 'command' || this.owned) client.on('end', () => this.#revive(client))
    if (purpose !== 'command') return
    client.on('reconnecting', (delayMs: number) => this.#events.emit('reconnecting', { delayMs }))
    // ioredis emits status events on the next tick: 'connect' still comes before the handshake
    // reply that flushes the queues, 'ready' comes after it.
    if (!isCluster(client)) client.on('connect', () => dropSettledQueuedCommands(client))
    client.on('ready', () => {
      this.#breaker?.success()
      const address = isCluster(client) ? undefined : streamAddress(client)
      if (this.kind === 'sentinel' && address) {
        const from = this.#master
        this.#master = address
        if (from && (from.host !== address.host || from.port !== address.port)) {
          this.#events.emit('failover', { from, to: address })
        }
      }
      this.#events.emit('ready', address ? { kind: this.kind, address } : { kind: this.kind })
    })
  }
}

const REVIVE_AFTER_MS = 100
function duplicate(client: RedisClient, purpose: string): RedisClient {
  // Dedicated connections never auto-pipeline (subscriber and blocking modes forbid it) and blocking
  // commands must not hit the command timeout.
  const override: RedisOptions = { enableAutoPipelining: false, connectionName: `${purpose}` }
  if (purpose !== 'subscriber') override.commandTimeout = undefined
  if (isCluster(client)) {
    const cluster = client
    return cluster.duplicate(undefined, {
      enableAutoPipelining: false,
      redisOptions: { ...cluster.options.redisOptions, ...override },
    })
  }
  const redis = client
  return redis.duplicate({
    ...override,
    connectionName: `${redis.options.connectionName ?? 'redkit'}:${purpose}`,
  })
}

/** True for an ioredis Cluster client (also from another copy of ioredis). */
export function isCluster(client: RedisClient): client is Cluster {
  return (client as { isCluster?: boolean }).isCluster === true
}

function streamAddress(client: Redis): RedisAddress | undefined {
  const stream = (client as unknown as { stream?: { remoteAddress?: string; remotePort?: number } }).stream
  if (!stream?.remoteAddress || !stream.remotePort) return undefined
  return { host: stream.remoteAddress.replace(/^::ffff:/, ''), port: stream.remotePort }
}

interface QueuedItem {
  command: { isSettled?: boolean }
}
interface CommandQueue {
  length: number
  toArray(): QueuedItem[]
  clear(): void
  push(item: QueuedItem): void
}

/**
 * A command that already failed with "Command timed out" while Redis was away is still in
 * ioredis's offline queue and would be sent on reconnect: the caller was told it failed, yet it
 * would run (a rate-limit point spent, an analytics batch counted twice). Dropping settled
 * commands on `connect` (before the handshake that flushes the queues) keeps "failed" meaning
 * "not run".
 */
function dropSettledQueuedCommands(client: Redis): void {
  const internals = client as unknown as {
    offlineQueue?: CommandQueue
    prevCommandQueue?: CommandQueue | null
  }
  // offlineQueue: never sent; prevCommandQueue: written to a socket that died before the reply.
  for (const queue of [internals.offlineQueue, internals.prevCommandQueue]) {
    if (!queue || typeof queue.toArray !== 'function' || queue.length === 0) continue
    const pending = queue.toArray().filter((item) => !item.command?.isSettled)
    if (pending.length === queue.length) continue
    queue.clear()
    for (const item of pending) queue.push(item)
  }
}

/** Rejects with "Command timed out" when `promise` takes longer than `ms`. */
export function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('Command timed out')), ms)
    promise.then(
      (value) => {
        clearTimeout(timer)
        resolve(value)
      },
      (error: unknown) => {
        clearTimeout(timer)
        reject(error)
      },
    )
  })
}

/** Hub options shared by the topology-specific builders. */
export type CommonOptions = RedisOptions
