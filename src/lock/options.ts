import { ConfigError } from '../errors.js'
import { type Duration, parseDuration } from '../util/duration.js'
import type { LockServer } from './nodes.js'

/** How an acquisition retries while the resource is busy. */
export interface RetryOptions {
  /**
   * Retries after the first attempt (so `attempts + 1` tries in all). Bounded on purpose: a lock
   * wait must end.
   * @default 10
   */
  attempts?: number
  /**
   * Base pause between tries (shortened when the holder's lease ends sooner).
   * @default 200
   */
  delay?: Duration
  /**
   * Random spread added to or taken from each pause, so waiting instances do not retry in lockstep.
   * @default 100
   */
  jitter?: Duration
}

/** Options of a `Locks` instance (`createLocks(kit, options)`; `kit.locks` uses the defaults). */
export interface LocksOptions {
  /**
   * Independent Redis masters for the Redlock quorum (URLs, ioredis options or clients). A lock is
   * granted when a majority grants it in time. Empty: the kit's own connection (standalone,
   * Sentinel or Cluster) is the one server.
   * @default []
   */
  servers?: LockServer[]
  /**
   * Lease length when a call does not say.
   * @default '30s'
   */
  ttl?: Duration
  /**
   * Retries of `acquire()` / `using()` when a call does not say; `false` tries once.
   * @default { attempts: 10, delay: 200, jitter: 100 }
   */
  retry?: RetryOptions | false
  /**
   * Clock drift allowance, as a fraction of the ttl (plus 2 ms), subtracted from the lease's
   * validity (Redlock's `driftFactor`).
   * @default 0.01
   */
  driftFactor?: number
  /**
   * Hash tag of a resource's keys. Keys of one multi-resource lock must share a Cluster slot, so on
   * Cluster give resources locked together a common tag (for example
   * `(r) => r.split(':')[0]` for `account:1` + `account:2`). Must be the same function everywhere
   * the resources are locked.
   * @default (resource) => resource
   */
  hashTag?: (resource: string) => string
}

/** Options of one acquisition. */
export interface AcquireOptions {
  /** Lease length. @default the instance's `ttl` ('30s') */
  ttl?: Duration
  /** Retries while busy; `false` tries once. @default the instance's `retry` */
  retry?: RetryOptions | false
  /**
   * Upper bound of the total wait (retries continue until it elapses, attempts unbounded), instead
   * of `retry.attempts`.
   * @default undefined
   */
  wait?: Duration
  /** Aborts the wait (rejects with the signal's reason). */
  signal?: AbortSignal
}

/** Options of `using()`: those of an acquisition. The lease is extended while the routine runs. */
export type UsingOptions = AcquireOptions

/** Options of `once()`. */
export interface OnceOptions {
  /**
   * How long the stored result is kept (and later callers get it without running the job).
   * @default '24h'
   */
  ttl?: Duration
  /**
   * Lease of the running job, extended while it runs; if the process dies, another caller may run
   * the job after it lapses.
   * @default the instance's `ttl` ('30s')
   */
  lease?: Duration
  /**
   * How long a caller waits for a job another instance is running before `LockBusyError`.
   * @default '30s'
   */
  wait?: Duration
}

export interface ResolvedRetry {
  attempts: number
  delayMs: number
  jitterMs: number
}

export interface ResolvedLocksOptions {
  servers: LockServer[]
  ttlMs: number
  retry: ResolvedRetry
  driftFactor: number
  hashTag: (resource: string) => string
}

export const NO_RETRY: ResolvedRetry = Object.freeze({ attempts: 0, delayMs: 0, jitterMs: 0 })

export const LOCKS_DEFAULTS = {
  servers: [] as LockServer[],
  ttl: '30s' as Duration,
  retry: { attempts: 10, delay: 200, jitter: 100 } as RetryOptions | false,
  driftFactor: 0.01,
  hashTag: (resource: string) => resource,
}

function defined<T extends object>(options: T): Partial<T> {
  return Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)) as Partial<T>
}

/** Checks a lease length: at least 10 ms (shorter cannot outlive one round trip). */
export function parseTtl(value: Duration, field: string): number {
  const ms = parseDuration(value, field)
  if (ms < 10) throw new ConfigError(field, `must be at least 10 ms, got ${ms}`, "write '30s' or 5000")
  return ms
}

export function resolveRetry(retry: RetryOptions | false, field: string): ResolvedRetry {
  if (retry === false) return NO_RETRY
  if (typeof retry !== 'object' || retry === null) {
    throw new ConfigError(field, 'must be an object or false', 'write { attempts: 10, delay: 200 }')
  }
  const attempts = retry.attempts ?? 10
  if (!Number.isInteger(attempts) || attempts < 0) {
    throw new ConfigError(`${field}.attempts`, `must be a non-negative integer, got ${attempts}`, 'write 10')
  }
  const delayMs = parseDuration(retry.delay ?? 200, `${field}.delay`)
  const jitterMs = parseDuration(retry.jitter ?? 100, `${field}.jitter`)
  return { attempts, delayMs, jitterMs }
}

/** Resolves and checks `LocksOptions`; throws `ConfigError` naming the bad field. */
export function resolveLocksOptions(options: LocksOptions): ResolvedLocksOptions {
  const o = { ...LOCKS_DEFAULTS, ...defined(options) }
  if (!Array.isArray(o.servers)) {
    throw new ConfigError('locks.servers', 'must be an array', "write ['redis://a:6379', 'redis://b:6379']")
  }
  if (o.servers.length === 2) {
    throw new ConfigError(
      'locks.servers',
      'has 2 servers: a majority of 2 is 2, so one failure stops every lock',
      'use 1, 3 or 5 independent masters',
    )
  }
  if (typeof o.driftFactor !== 'number' || !(o.driftFactor >= 0 && o.driftFactor < 0.5)) {
    throw new ConfigError(
      'locks.driftFactor',
      `must be a number in [0, 0.5), got ${o.driftFactor}`,
      'write 0.01',
    )
  }
  if (typeof o.hashTag !== 'function') {
    throw new ConfigError('locks.hashTag', 'must be a function', 'write (resource) => resource')
  }
  return {
    servers: o.servers,
    ttlMs: parseTtl(o.ttl, 'locks.ttl'),
    retry: resolveRetry(o.retry, 'locks.retry'),
    driftFactor: o.driftFactor,
    hashTag: o.hashTag,
  }
}
