import { BlockList, isIP } from 'node:net'
import type { Request, RequestHandler, Response } from 'express'
import type { LoginGuardOptions, RateLimitPolicyOptions, RateLimitResult, Redkit } from '../src/index.js'
import { ConfigError, ipKey, LoginGuard, normalizeCost, rateLimitField } from '../src/index.js'
import { legacyHeaders, retryAfterSeconds } from '../src/rate-limit/headers.js'
import { checkStaticCost } from '../src/rate-limit/options.js'
import { sendProblem, sendUnavailable } from './problem.js'

/** Draft-ietf-httpapi-ratelimit-headers-11 §5.1: the "quota-exceeded" problem type. */
const QUOTA_EXCEEDED = 'https://iana.org/assignments/http-problem-types#quota-exceeded'

/** How a request is mapped to the key its limits are counted under. */
export type RateLimitKey =
  | 'ip'
  | 'user'
  | ((req: Request) => string | number | undefined | Promise<string | number | undefined>)

/** Options of {@link rateLimit}. */
export interface RateLimitOptions extends Partial<RateLimitPolicyOptions> {
  /**
   * The limits checked together; a request passes only when every one has room, and then consumes
   * from all of them (from none when one rejects).
   * @default [{ points: 100, duration: '1m' }]
   */
  limits?: RateLimitPolicyOptions['limits']
  /**
   * What requests are counted under: `'ip'` (the client address as Express's `trust proxy`
   * setting resolves it, `req.ip`; IPv6 grouped by `ipv6Subnet`), `'user'` (`req.user.id`, falling
   * back to the IP for anonymous requests), or a function (a missing/empty result falls back to
   * the IP). Keys of any content are safe: separators and braces are escaped, long keys hashed.
   * @default 'ip'
   */
  key?: RateLimitKey
  /**
   * Prefix length IPv6 clients are grouped by (one subscriber usually holds a /64); 128 counts
   * each address alone.
   * @default 64
   */
  ipv6Subnet?: number
  /**
   * Points a request uses: a whole number >= 1 (checked at creation), or a function of the
   * request. A function's result is rounded up, and 0, negative, NaN or non-numbers are charged
   * as 1, so a request is never free or unlimited by accident (use `skip` for free requests).
   * @default 1
   */
  cost?: number | ((req: Request) => number | Promise<number>)
  /** Requests for which this returns true are not counted and get no headers. @default none */
  skip?: (req: Request) => boolean | Promise<boolean>
  /**
   * Never limited: client IPs, CIDR ranges (`'10.0.0.0/8'`, `'2001:db8::/32'`) or exact keys.
   * @default []
   */
  allow?: string[]
  /**
   * Always refused with 403 (problem+json), without a Redis call: IPs, CIDR ranges or exact keys.
   * @default []
   */
  deny?: string[]
  /**
   * Send `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers-11) on allowed
   * and rejected responses.
   * @default true
   */
  headers?: boolean
  /**
   * Also send `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset` (epoch seconds)
   * for the limit with the fewest points left.
   * @default false
   */
  legacyHeaders?: boolean
  /** `detail` of the 429 problem+json body. @default 'Too many requests; retry after the time in Retry-After.' */
  message?: string
}

interface ResolvedRateLimitOptions {
  key: RateLimitKey
  ipv6Subnet: number
  cost: number | ((req: Request) => number | Promise<number>)
  skip: ((req: Request) => boolean | Promise<boolean>) | null
  allow: AccessList | null
  deny: AccessList | null
  headers: boolean
  legacyHeaders: boolean
  message: string
}

const RATE_LIMIT_DEFAULTS = {
  limits: [{ points: 100, duration: '1m' }],
  key: 'ip' as RateLimitKey,
  ipv6Subnet: 64,
  cost: 1,
  headers: true,
  legacyHeaders: false,
  message: 'Too many requests; retry after the time in Retry-After.',
}

function defined<T extends object>(options: T): Partial<T> {
  return Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)) as Partial<T>
}

function resolveRateLimitOptions(options: RateLimitOptions): ResolvedRateLimitOptions {
  const o = { ...RATE_LIMIT_DEFAULTS, ...defined(options) }
  if (o.key !== 'ip' && o.key !== 'user' && typeof o.key !== 'function') {
    throw new ConfigError(
      'rateLimit.key',
      `must be 'ip', 'user' or a function, got ${String(o.key)}`,
      "write key: 'ip'",
    )
  }
  if (!Number.isInteger(o.ipv6Subnet) || o.ipv6Subnet < 8 || o.ipv6Subnet > 128) {
    throw new ConfigError(
      'rateLimit.ipv6Subnet',
      `must be a whole number from 8 to 128, got ${o.ipv6Subnet}`,
      'write ipv6Subnet: 64',
    )
  }
  const cost = typeof o.cost === 'function' ? o.cost : checkStaticCost(o.cost, 'rateLimit.cost')
  if (o.skip !== undefined && typeof o.skip !== 'function') {
    throw new ConfigError(
      'rateLimit.skip',
      'must be a function of the request',
      'write skip: (req) => req.path === "/healthz"',
    )
  }
  for (const field of ['headers', 'legacyHeaders'] as const) {
    if (typeof o[field] !== 'boolean')
      throw new ConfigError(`rateLimit.${field}`, 'must be a boolean', 'write true or false')
  }
  if (typeof o.message !== 'string')
    throw new ConfigError('rateLimit.message', 'must be a string', "write message: 'Slow down'")
  return {
    key: o.key,
    ipv6Subnet: o.ipv6Subnet,
    cost,
    skip: o.skip ?? null,
    allow: accessList(o.allow, 'rateLimit.allow'),
    deny: accessList(o.deny, 'rateLimit.deny'),
    headers: o.headers,
    legacyHeaders: o.legacyHeaders,
    message: o.message,
  }
}

/** IPs and CIDR ranges (matched against the client address) plus exact keys. */
interface AccessList {
  ips: BlockList
  keys: Set<string>
}

function accessList(entries: unknown, field: string): AccessList | null {
  if (entries === undefined) return null
  if (!Array.isArray(entries))
    throw new ConfigError(field, 'must be an array of IPs, CIDR ranges or keys', "write ['10.0.0.0/8']")
  if (entries.length === 0) return null
  const ips = new BlockList()
  const keys = new Set<string>()
  for (const entry of entries) {
    if (typeof entry !== 'string' || entry === '') {
      throw new ConfigError(
        field,
        `holds ${JSON.stringify(entry)}`,
        'write IPs, CIDR ranges or keys as non-empty strings',
      )
    }
    const slash = entry.lastIndexOf('/')
    const address = slash === -1 ? entry : entry.slice(0, slash)
    const family = isIP(address)
    if (family === 0) {
      keys.add(entry)
      continue
    }
    const type = family === 4 ? 'ipv4' : 'ipv6'
    if (slash === -1) {
      ips.addAddress(address, type)
      continue
    }
    const prefix = Number(entry.slice(slash + 1))
    if (!Number.isInteger(prefix) || prefix < 0 || prefix > (family === 4 ? 32 : 128)) {
      throw new ConfigError(
        field,
        `holds an invalid range ${JSON.stringify(entry)}`,
        "write '10.0.0.0/8' or '2001:db8::/32'",
      )
    }
    ips.addSubnet(address, prefix, type)
  }
  return { ips, keys }
}

function listed(list: AccessList, req: Request, key: string): boolean {
  if (list.keys.has(key)) return true
  // The full address (IPv4-mapped IPv6 unwrapped), not the /64 group used as the key.
  const address = ipKey(req.ip, 128)
  const family = isIP(address)
  return family !== 0 && list.ips.check(address, family === 4 ? 'ipv4' : 'ipv6')
}

/**
 * Rate limiter middleware: every limit of the policy is checked and consumed atomically in one
 * Redis round trip; rejected requests get 429 `application/problem+json` with `Retry-After`;
 * `RateLimit-Policy` / `RateLimit` headers (draft-ietf-httpapi-ratelimit-headers-11) on every
 * counted response. Redis down: `onRedisError` (default `'memory'`), never waiting longer than the
 * kit's command timeout.
 *
 * @example
 * app.use('/api', rateLimit(kit, {
 *   name: 'api',
 *   limits: [{ name: 'burst', points: 10, duration: '1s' }, { name: 'daily', points: 10_000, duration: '1d' }],
 * }))
 */
export function rateLimit(kit: Redkit, options: RateLimitOptions = {}): RequestHandler {
  const resolved = resolveRateLimitOptions(options)
  const policy = kit.rateLimits.policy(
    {
      name: options.name,
      limits: options.limits ?? RATE_LIMIT_DEFAULTS.limits,
      blockDuration: options.blockDuration,
      blockReplacesWindow: options.blockReplacesWindow,
      onRedisError: options.onRedisError,
    },
    'rateLimit',
  )
  const { key: keyOption, ipv6Subnet, cost: costOption, skip, allow, deny, headers, message } = resolved
  const legacy = resolved.legacyHeaders
  const policyField = policy.policyField

  return async function rateLimitMiddleware(req, res, next) {
    try {
      if (skip && (await skip(req))) return next()
      const clientIp = ipKey(req.ip, ipv6Subnet)
      let key = clientIp
      if (keyOption === 'user') {
        const id = (req as Request & { user?: { id?: unknown } }).user?.id
        if ((typeof id === 'string' && id !== '') || typeof id === 'number') key = `user:${id}`
      } else if (keyOption !== 'ip') {
        const custom = await keyOption(req)
        if ((typeof custom === 'string' && custom !== '') || typeof custom === 'number') key = String(custom)
      }
      if (deny && listed(deny, req, key)) {
        sendProblem(res, {
          status: 403,
          title: 'Forbidden',
          detail: 'This client is not allowed to use this resource.',
        })
        return
      }
      if (allow && listed(allow, req, key)) return next()
      const cost = typeof costOption === 'number' ? costOption : normalizeCost(await costOption(req))
      const result = await policy.consume(key, cost)
      if (headers && result.limits.length > 0) {
        res.setHeader('RateLimit-Policy', policyField)
        res.setHeader('RateLimit', rateLimitField(result))
      }
      if (legacy) setLegacyHeaders(res, result)
      if (result.allowed) return next()
      res.setHeader('Retry-After', String(retryAfterSeconds(result)))
      if (result.source === 'fail-closed') {
        sendUnavailable(
          res,
          'Service Unavailable',
          'The rate limiter cannot reach its store; try again shortly.',
        )
        return
      }
      sendProblem(res, {
        type: QUOTA_EXCEEDED,
        status: 429,
        title: 'Too Many Requests',
        detail: message,
        'violated-policies': result.violated,
      })
    } catch (error) {
      next(error)
    }
  }
}

function setLegacyHeaders(res: Response, result: RateLimitResult): void {
  const fields = legacyHeaders(result)
  if (!fields) return
  for (const [name, value] of Object.entries(fields)) res.setHeader(name, value)
}

/** Options of {@link loginProtection}. */
export interface LoginProtectionOptions extends LoginGuardOptions {
  /**
   * Reads the username of the attempt (trimmed and lower-cased before counting). Without one the
   * attempt counts only against the IP.
   * @default (req) => req.body?.username ?? req.body?.email
   */
  username?: (req: Request) => string | undefined
  /**
   * Prefix length IPv6 clients are grouped by.
   * @default 64
   */
  ipv6Subnet?: number
  /**
   * Response statuses that mean "wrong credentials": the attempt stays counted. Any status below
   * 400 is a success (consecutive failures cleared); any other status (400, 5xx, ...) did not test
   * a password and gives the points back. An aborted request stays counted.
   * @default [401, 403]
   */
  failureStatuses?: number[]
}

function defaultUsername(req: Request): string | undefined {
  const body = req.body as Record<string, unknown> | undefined
  const name = body?.username ?? body?.email
  return typeof name === 'string' ? name : undefined
}

/**
 * Brute-force protection for a login route (mount it after the body parser, before the handler):
 * refuses with 429 while the username + IP has too many consecutive failures or the IP too many
 * failures overall, and settles each attempt from the response status. The attempt is also on
 * `res.locals.loginAttempt` for handlers that want to settle it themselves.
 *
 * @example
 * app.post('/login', express.json(), loginProtection(kit), async (req, res) => {
 *   const ok = await users.verify(req.body.username, req.body.password)
 *   res.status(ok ? 200 : 401).json({ ok })
 * })
 */
export function loginProtection(kit: Redkit, options: LoginProtectionOptions = {}): RequestHandler {
  const guard = new LoginGuard(kit, options)
  const username = options.username ?? defaultUsername
  const ipv6Subnet = options.ipv6Subnet ?? 64
  if (!Number.isInteger(ipv6Subnet) || ipv6Subnet < 8 || ipv6Subnet > 128) {
    throw new ConfigError(
      'loginProtection.ipv6Subnet',
      `must be a whole number from 8 to 128, got ${ipv6Subnet}`,
      'write 64',
    )
  }
  if (options.username !== undefined && typeof options.username !== 'function') {
    throw new ConfigError(
      'loginProtection.username',
      'must be a function of the request',
      'write (req) => req.body?.email',
    )
  }
  const statuses = options.failureStatuses ?? [401, 403]
  if (!Array.isArray(statuses) || !statuses.every((s) => Number.isInteger(s) && s >= 400 && s < 600)) {
    throw new ConfigError(
      'loginProtection.failureStatuses',
      `must be a list of 4xx/5xx status codes, got ${JSON.stringify(statuses)}`,
      'write [401, 403]',
    )
  }
  const failureStatuses = new Set(statuses)
  const report = (error: unknown) =>
    kit.events.emit('error', { error: error as Error, connection: 'ratelimit' })

  return async function loginProtectionMiddleware(req, res, next) {
    try {
      const attempt = await guard.attempt(username(req), ipKey(req.ip, ipv6Subnet))
      const { ip, userIp } = attempt.results
      if (ip.source === 'fail-closed' || userIp?.source === 'fail-closed') {
        // onRedisError 'closed': the budgets cannot be checked, which is not a brute-force block.
        sendUnavailable(
          res,
          'Service Unavailable',
          'Login attempts cannot be checked right now; try again shortly.',
        )
        return
      }
      if (!attempt.allowed) {
        res.setHeader('Retry-After', String(Math.max(1, Math.ceil(attempt.retryAfterMs / 1000))))
        sendProblem(res, {
          type: QUOTA_EXCEEDED,
          status: 429,
          title: 'Too Many Requests',
          detail: 'Too many failed login attempts; retry after the time in Retry-After.',
        })
        return
      }
      res.locals.loginAttempt = attempt
      res.once('finish', () => {
        const status = res.statusCode
        if (status < 400) attempt.succeeded().catch(report)
        else if (failureStatuses.has(status)) attempt.failed()
        else attempt.cancelled().catch(report)
      })
      next()
    } catch (error) {
      next(error)
    }
  }
}
