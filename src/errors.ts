/**
 * Every error redkit throws is a `RedkitError` with a stable `code`; match on `code`, not on the
 * message. Subclasses add context fields.
 */
export class RedkitError extends Error {
  static readonly code: string = 'E_REDKIT'
  /** Stable, documented code such as `E_CONFIG` or `E_CONNECTION`. */
  readonly code: string

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = new.target.name
    this.code = (new.target as typeof RedkitError).code
  }
}

/** Invalid or contradictory options, environment or config file. Thrown at creation time. */
export class ConfigError extends RedkitError {
  static override readonly code: string = 'E_CONFIG'
  /** The option, environment variable or file field that is wrong. */
  readonly field: string

  constructor(field: string, problem: string, fix: string, options?: { cause?: unknown }) {
    super(`Invalid redkit config: ${field} ${problem}; ${fix}.`, options)
    this.field = field
  }
}

/**
 * Redis could not be reached in time (down, failing over, circuit open). Callers decide whether to
 * fail open (caches) or closed (sessions, locks).
 */
export class ConnectionError extends RedkitError {
  static override readonly code: string = 'E_CONNECTION'
}

/** A value cannot be encoded for the cache (function, symbol, circular structure) or stored bytes are not valid. */
export class CodecError extends RedkitError {
  static override readonly code: string = 'E_CODEC'
  /** Where in the value the problem is (`$.items[2].fn`), when known. */
  readonly path: string | undefined

  constructor(message: string, options?: { cause?: unknown; path?: string }) {
    super(message, options)
    this.path = options?.path
  }
}

/** Context of a lock error: which resource(s) and after how many acquisition attempts. */
export interface LockErrorContext {
  /** The resource, or the resources joined with `,`. */
  resource: string
  /** Acquisition attempts made (0 when the error is not about acquiring). */
  attempts?: number
  cause?: unknown
}

/** Base of the lock errors: which resource, and how many acquisition attempts were made. */
export class LockError extends RedkitError {
  static override readonly code: string = 'E_LOCK'
  readonly resource: string
  readonly attempts: number

  constructor(message: string, context: LockErrorContext) {
    super(message, { cause: context.cause })
    this.resource = context.resource
    this.attempts = context.attempts ?? 0
  }
}

/** The resource is held by someone else (after every allowed retry). */
export class LockBusyError extends LockError {
  static override readonly code: string = 'E_LOCK_BUSY'
  /** Remaining lease of the current holder in ms, when Redis told us. */
  readonly retryAfterMs: number | undefined

  constructor(message: string, context: LockErrorContext & { retryAfterMs?: number }) {
    super(message, context)
    this.retryAfterMs = context.retryAfterMs
  }
}

/** The lease ran out or was taken over: the holder must stop touching the protected resource. */
export class LockLostError extends LockError {
  static override readonly code: string = 'E_LOCK_LOST'
}

/** Redis could not be reached, or too few lock servers answered to form a quorum: fails closed. */
export class LockUnavailableError extends LockError {
  static override readonly code: string = 'E_LOCK_UNAVAILABLE'
}

/**
 * An outbound rate-limit queue could not grant tokens: the queue is full, the wait deadline
 * passed, the cost exceeds what a window can ever grant, or the kit was closed while it waited.
 */
export class RateLimitQueueError extends RedkitError {
  static override readonly code: string = 'E_RATE_LIMIT_QUEUE'
  /** Name of the queue's policy. */
  readonly policy: string

  constructor(message: string, policy: string, options?: { cause?: unknown }) {
    super(message, options)
    this.policy = policy
  }
}

/** A session would exceed the configured `maxSize` once serialized: it is not stored. */
export class SessionTooLargeError extends RedkitError {
  static override readonly code: string = 'E_SESSION_TOO_LARGE'
  /** Serialized size of the session in bytes (field names and values). */
  readonly bytes: number
  /** The configured limit in bytes. */
  readonly maxSize: number

  constructor(bytes: number, maxSize: number) {
    super(
      `The session is ${bytes} bytes once serialized, over the maxSize of ${maxSize} bytes; store less in ` +
        'the session (ids instead of objects) or raise maxSize.',
    )
    this.bytes = bytes
    this.maxSize = maxSize
  }
}

/**
 * With `onConflict: 'reject'`, another request changed the session after this one loaded it: the
 * write is refused so that neither change is silently lost.
 */
export class SessionConflictError extends RedkitError {
  static override readonly code: string = 'E_SESSION_CONFLICT'
  /** Version the request loaded and the version found in Redis. */
  readonly expectedVersion: string
  readonly actualVersion: string

  constructor(expectedVersion: string, actualVersion: string) {
    super(
      `The session changed concurrently (loaded version ${expectedVersion || 'none'}, stored ` +
        `${actualVersion || 'none'}); reload it and apply the change again.`,
    )
    this.expectedVersion = expectedVersion
    this.actualVersion = actualVersion
  }
}

/** A query-cache call got input it cannot work with (a query that is not a non-empty string, ...). */
export class QueryInputError extends RedkitError {
  static override readonly code: string = 'E_QUERY_INPUT'
}
