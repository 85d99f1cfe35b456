import { ConfigError } from '../errors.js'
import type { Redkit } from '../kit.js'
import type { Duration } from '../util/duration.js'
import type { OnRedisError } from './options.js'
import type { RateLimitPolicy, RateLimitResult } from './policy.js'

/** One failure budget of {@link LoginGuardOptions}. */
export interface FailureLimit {
  /** Failed attempts allowed per window. */
  points: number
  /** Window length. */
  duration: Duration
  /**
   * How long the key is blocked once the budget is exceeded, even when the window has longer to
   * run; then its count starts afresh.
   */
  blockDuration: Duration
}

/** Options of the login brute-force guard. */
export interface LoginGuardOptions {
  /**
   * Name prefix of the two policies (`<name>-user-ip`, `<name>-ip`), so two login forms can keep
   * separate counters.
   * @default 'login'
   */
  name?: string
  /**
   * Consecutive failures per username + IP, cleared by a successful login.
   * @default { points: 5, duration: '1d', blockDuration: '15m' }
   */
  consecutiveFailures?: FailureLimit
  /**
   * Failures per IP (any username), counted over the window, not cleared by a success: slows
   * down one address trying many accounts.
   * @default { points: 100, duration: '1d', blockDuration: '1d' }
   */
  failuresPerIp?: FailureLimit
  /**
   * What happens when Redis is unreachable (see the rate limiter's `onRedisError`).
   * @default 'memory'
   */
  onRedisError?: OnRedisError
}

/** An attempt admitted or refused by {@link LoginGuard.attempt}. */
export interface LoginAttempt {
  /** False when the username + IP or the IP is blocked or over its budget. */
  allowed: boolean
  /** Milliseconds to wait when refused; 0 when allowed. */
  retryAfterMs: number
  /** Per-policy answers (`userIp` absent when no username was given). */
  results: { ip: RateLimitResult; userIp?: RateLimitResult }
  /** The login succeeded: clears the consecutive failures and gives the IP point back. */
  succeeded(): Promise<void>
  /** The login failed: the point taken for the attempt stays counted. */
  failed(): void
  /** The attempt did not test a password (bad request, server error): both points go back. */
  cancelled(): Promise<void>
}

const CONSECUTIVE_DEFAULTS: FailureLimit = { points: 5, duration: '1d', blockDuration: '15m' }
const PER_IP_DEFAULTS: FailureLimit = { points: 100, duration: '1d', blockDuration: '1d' }

/**
 * Brute-force protection for a login: each attempt takes one point from its username + IP budget
 * and one from its IP budget *before* the password is checked (so parallel guesses count at once),
 * and the outcome settles them: success clears the username + IP counter and returns the IP point,
 * failure keeps both. Over a budget, the key is blocked for `blockDuration` on every instance,
 * then its count starts afresh (the block replaces the window, as in rate-limiter-flexible).
 *
 * @example
 * const guard = new LoginGuard(kit)
 * const attempt = await guard.attempt(username, ip)
 * if (!attempt.allowed) return tooManyAttempts(attempt.retryAfterMs)
 * if (await checkPassword(username, password)) await attempt.succeeded()
 * else attempt.failed()
 */
export class LoginGuard {
  readonly userIp: RateLimitPolicy
  readonly ip: RateLimitPolicy

  constructor(kit: Redkit, options: LoginGuardOptions = {}) {
    const name = options.name ?? 'login'
    const consecutive = { ...CONSECUTIVE_DEFAULTS, ...options.consecutiveFailures }
    const perIp = { ...PER_IP_DEFAULTS, ...options.failuresPerIp }
    for (const [field, limit] of [
      ['loginProtection.consecutiveFailures', consecutive],
      ['loginProtection.failuresPerIp', perIp],
    ] as const) {
      if (limit.blockDuration === undefined) {
        throw new ConfigError(`${field}.blockDuration`, 'is required', "write blockDuration: '15m'")
      }
    }
    const onRedisError = options.onRedisError ?? 'memory'
    this.userIp = kit.rateLimits.policy(
      {
        name: `${name}-user-ip`,
        limits: [
          { name: 'consecutive-failures', points: consecutive.points, duration: consecutive.duration },
        ],
        blockDuration: consecutive.blockDuration,
        // A lockout lasts blockDuration, then the count starts afresh (not at the window's end).
        blockReplacesWindow: true,
        onRedisError,
      },
      'loginProtection.consecutiveFailures',
    )
    this.ip = kit.rateLimits.policy(
      {
        name: `${name}-ip`,
        limits: [{ name: 'ip-failures', points: perIp.points, duration: perIp.duration }],
        blockDuration: perIp.blockDuration,
        blockReplacesWindow: true,
        onRedisError,
      },
      'loginProtection.failuresPerIp',
    )
  }

  /**
   * Admits or refuses one attempt by `username` (any string; trimmed and lower-cased) from `ip`
   * (already normalized, see `ipKey`). A missing username counts only against the IP.
   */
  async attempt(username: string | undefined, ip: string): Promise<LoginAttempt> {
    const user = normalizeUsername(username)
    const userIpKey = user === undefined ? undefined : `${ip}|${user}`
    const [ipResult, userIpResult] = await Promise.all([
      this.ip.consume(ip),
      userIpKey === undefined ? undefined : this.userIp.consume(userIpKey),
    ])
    const allowed = ipResult.allowed && (userIpResult?.allowed ?? true)
    if (!allowed) {
      // Consume from none: give back the point the other budget took.
      if (ipResult.allowed) await this.ip.refund(ip)
      if (userIpResult?.allowed && userIpKey) await this.userIp.refund(userIpKey)
    }
    let settled = !allowed
    const settle = () => {
      const first = !settled
      settled = true
      return first
    }
    return {
      allowed,
      retryAfterMs: Math.max(ipResult.retryAfterMs, userIpResult?.retryAfterMs ?? 0),
      results: userIpResult ? { ip: ipResult, userIp: userIpResult } : { ip: ipResult },
      succeeded: async () => {
        if (!settle()) return
        await Promise.all([this.ip.refund(ip), userIpKey ? this.userIp.reset(userIpKey) : undefined])
      },
      failed: () => {
        settle()
      },
      cancelled: async () => {
        if (!settle()) return
        await Promise.all([this.ip.refund(ip), userIpKey ? this.userIp.refund(userIpKey) : undefined])
      },
    }
  }

  /**
   * Clears every counter and block of `username` + `ip` (for example after a password reset), on
   * every instance and for every guard of this name, whatever its budgets.
   */
  async unblock(username: string, ip: string): Promise<void> {
    const user = normalizeUsername(username)
    await Promise.all([
      this.ip.reset(ip),
      user === undefined ? undefined : this.userIp.reset(`${ip}|${user}`),
    ])
  }
}

function normalizeUsername(username: unknown): string | undefined {
  if (typeof username !== 'string' && typeof username !== 'number') return undefined
  const text = String(username).trim().toLowerCase()
  // Long names are hashed by the policy, never truncated (truncation would merge accounts).
  return text || undefined
}
