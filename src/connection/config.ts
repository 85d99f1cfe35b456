import { readFileSync } from 'node:fs'
import type { Cluster, ClusterNode, ClusterOptions, Redis, RedisOptions } from 'ioredis'
import { ConfigError } from '../errors.js'
import type { TopologyKind } from '../events.js'
import { type Duration, parseDuration } from '../util/duration.js'

/** A Redis server address. */
export interface HostPort {
  host: string
  port: number
}

/** Connect through Redis Sentinel. Any other ioredis option may be added. */
export interface SentinelConfig extends Omit<RedisOptions, 'sentinels' | 'name'> {
  /** Sentinel addresses; at least one. */
  sentinels: HostPort[]
  /** The master group name the sentinels monitor (`sentinel monitor <name> ...`). */
  name: string
  /** `'master'` (default) for the command connection; `'slave'` for read-only use. */
  role?: 'master' | 'slave'
}

/** Connect to a Redis Cluster. Any other ioredis `ClusterOptions` may be added. */
export interface ClusterConfig extends ClusterOptions {
  /** Seed nodes; at least one. The rest of the cluster is discovered. */
  cluster: HostPort[]
}

/**
 * Where Redis is: a URL (`redis://user:pass@host:6379/0`, `rediss://` for TLS), ioredis options,
 * a Sentinel config, a Cluster config, or an existing ioredis `Redis`/`Cluster` client (which the
 * kit then uses but does not own: `kit.close()` leaves it open).
 */
export type RedisInput = string | RedisOptions | SentinelConfig | ClusterConfig | Redis | Cluster

/** Circuit breaker settings. */
export interface BreakerOptions {
  /**
   * Consecutive connection failures that open the circuit.
   * @default 5
   */
  threshold?: number
  /**
   * How long the circuit stays open before one trial command may pass.
   * @default 1000
   */
  cooldown?: Duration
}

/** Options of {@link createRedkit}. Everything is optional; see the README's configuration table. */
export interface RedkitOptions {
  /**
   * Where Redis is. When left out: `REDIS_URL`, `REDIS_SENTINELS` or `REDIS_CLUSTER_NODES` from the
   * environment, then `redis` in the `REDKIT_CONFIG` file, then `redis://127.0.0.1:6379`.
   */
  redis?: RedisInput
  /**
   * First segment of every key the kit writes (`prefix:module:...`). No braces or whitespace.
   * @default 'redkit' (or `REDKIT_PREFIX`)
   */
  prefix?: string
  /**
   * How long a command may wait for its reply, queued time included, before it fails with
   * `ConnectionError`. Applies to owned connections.
   * @default 1000
   */
  commandTimeout?: Duration
  /**
   * How long one connection attempt may take.
   * @default 2000
   */
  connectTimeout?: Duration
  /**
   * Upper bound of the reconnect backoff (exponential with jitter, retried forever).
   * @default 1000
   */
  maxRetryDelay?: Duration
  /**
   * Queue the commands issued in one event-loop turn and send them as one pipeline (ioredis
   * `enableAutoPipelining`): fewer writes under concurrency, a little more CPU per command.
   * @default true
   */
  autoPipelining?: boolean
  /**
   * Circuit breaker in front of module commands, or `false` to turn it off.
   * @default { threshold: 5, cooldown: 1000 }
   */
  breaker?: BreakerOptions | false
  /**
   * Environment to read `REDIS_*` / `REDKIT_*` variables from.
   * @default process.env
   */
  env?: Record<string, string | undefined>
  /**
   * JSON config file, or `false` to read none.
   * @default the path in `REDKIT_CONFIG`, else none
   */
  configFile?: string | false
}

/** How the kit reaches Redis, after options, environment and file are merged. */
export type Topology =
  | { kind: 'standalone'; options: RedisOptions }
  | { kind: 'sentinel'; options: RedisOptions }
  | { kind: 'cluster'; nodes: ClusterNode[]; options: ClusterOptions }
  | { kind: TopologyKind; client: Redis | Cluster }

/** Fully resolved configuration: nothing optional. */
export interface ResolvedConfig {
  prefix: string
  commandTimeoutMs: number
  connectTimeoutMs: number
  maxRetryDelayMs: number
  autoPipelining: boolean
  breaker: { threshold: number; cooldownMs: number } | null
  topology: Topology
}

export const REDKIT_DEFAULTS = {
  redis: 'redis://127.0.0.1:6379',
  prefix: 'redkit',
  commandTimeout: 1000,
  connectTimeout: 2000,
  maxRetryDelay: 1000,
  autoPipelining: true,
  breaker: { threshold: 5, cooldown: 1000 },
} as const

const URL_FIX = 'write redis://[user:password@]host[:6379][/db], or rediss:// for TLS'
const ADDRESS_LIST_FIX =
  "write a comma-separated list such as 'host1:26379,host2:26379' ([::1]:26379 for IPv6)"

type Layer = Omit<RedkitOptions, 'env' | 'configFile'>

/**
 * Merges explicit options, the environment and the config file (in that order of precedence) and
 * checks every value. Throws `ConfigError` naming the field and what to write instead.
 */
export function resolveConfig(options: RedkitOptions = {}): ResolvedConfig {
  const env = options.env ?? process.env
  const fileLayer = readConfigFile(options.configFile === undefined ? env.REDKIT_CONFIG : options.configFile)
  const envLayer = readEnvLayer(env)
  const explicit = dropUndefined({ ...options, env: undefined, configFile: undefined })
  const layers: Array<[Layer, string]> = [
    [explicit, 'options'],
    [envLayer, 'environment'],
    [fileLayer, 'REDKIT_CONFIG file'],
  ]
  const pick = <K extends keyof Layer>(key: K): Layer[K] | undefined =>
    layers.find(([l]) => l[key] !== undefined)?.[0][key]

  const prefix = pick('prefix') ?? REDKIT_DEFAULTS.prefix
  if (typeof prefix !== 'string' || prefix.length === 0 || /[{}\s]/.test(prefix)) {
    throw new ConfigError(
      'prefix',
      `must be a non-empty string without braces or whitespace, got ${JSON.stringify(prefix)}`,
      "write a short name such as 'shop'",
    )
  }
  const commandTimeoutMs = parseDuration(
    pick('commandTimeout') ?? REDKIT_DEFAULTS.commandTimeout,
    'commandTimeout',
  )
  const connectTimeoutMs = parseDuration(
    pick('connectTimeout') ?? REDKIT_DEFAULTS.connectTimeout,
    'connectTimeout',
  )
  const maxRetryDelayMs = parseDuration(
    pick('maxRetryDelay') ?? REDKIT_DEFAULTS.maxRetryDelay,
    'maxRetryDelay',
  )
  if (commandTimeoutMs === 0)
    throw new ConfigError('commandTimeout', 'must be greater than 0', "write 1000 or '1s'")
  if (connectTimeoutMs === 0)
    throw new ConfigError('connectTimeout', 'must be greater than 0', "write 2000 or '2s'")

  const autoPipelining = pick('autoPipelining') ?? REDKIT_DEFAULTS.autoPipelining
  if (typeof autoPipelining !== 'boolean') {
    throw new ConfigError(
      'autoPipelining',
      `must be true or false, got ${JSON.stringify(autoPipelining)}`,
      'write true or false',
    )
  }

  const breakerOption = pick('breaker')
  let breaker: ResolvedConfig['breaker'] = null
  if (breakerOption !== false) {
    const b = breakerOption ?? {}
    if (typeof b !== 'object' || b === null) {
      throw new ConfigError(
        'breaker',
        'must be an object or false',
        'write { threshold: 5, cooldown: 1000 } or false',
      )
    }
    const threshold = b.threshold ?? REDKIT_DEFAULTS.breaker.threshold
    if (!Number.isInteger(threshold) || threshold < 1) {
      throw new ConfigError(
        'breaker.threshold',
        `must be a whole number >= 1, got ${String(threshold)}`,
        'write 5',
      )
    }
    breaker = {
      threshold,
      cooldownMs: parseDuration(b.cooldown ?? REDKIT_DEFAULTS.breaker.cooldown, 'breaker.cooldown'),
    }
  }

  const source = layers.find(([l]) => l.redis !== undefined)
  const input = source?.[0].redis ?? REDKIT_DEFAULTS.redis
  const field = source?.[1] === 'environment' ? envRedisField(env) : 'redis'
  const topology = toTopology(input, field, env)
  return { prefix, commandTimeoutMs, connectTimeoutMs, maxRetryDelayMs, autoPipelining, breaker, topology }
}

function envRedisField(env: Record<string, string | undefined>): string {
  if (env.REDIS_SENTINELS) return 'REDIS_SENTINELS'
  if (env.REDIS_CLUSTER_NODES) return 'REDIS_CLUSTER_NODES'
  return 'REDIS_URL'
}

function dropUndefined<T extends object>(value: T): T {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as T
}

function readConfigFile(path: string | false | undefined): Layer {
  if (!path) return {}
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (error) {
    throw new ConfigError(
      'REDKIT_CONFIG',
      `names a file that cannot be read (${(error as Error).message})`,
      'point it at a readable JSON file or unset it',
      { cause: error },
    )
  }
  let parsed: unknown
  try {
    parsed = JSON.parse(text)
  } catch (error) {
    throw new ConfigError(
      'REDKIT_CONFIG',
      `file ${path} is not valid JSON (${(error as Error).message})`,
      'fix the JSON syntax',
      { cause: error },
    )
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new ConfigError(
      'REDKIT_CONFIG',
      `file ${path} must hold a JSON object`,
      'write { "redis": "redis://host:6379", "prefix": "shop" }',
    )
  }
  const allowed = new Set([
    'redis',
    'prefix',
    'commandTimeout',
    'connectTimeout',
    'maxRetryDelay',
    'autoPipelining',
    'breaker',
  ])
  for (const key of Object.keys(parsed)) {
    if (!allowed.has(key)) {
      throw new ConfigError(
        `REDKIT_CONFIG.${key}`,
        'is not a known option',
        `use only ${[...allowed].join(', ')}`,
      )
    }
  }
  return parsed as Layer
}

function readEnvLayer(env: Record<string, string | undefined>): Layer {
  const layer: Layer = {}
  const defined = ['REDIS_URL', 'REDIS_SENTINELS', 'REDIS_CLUSTER_NODES'].filter((name) => env[name])
  if (defined.length > 1) {
    throw new ConfigError(
      defined.join(' and '),
      'are both set and contradict each other',
      `keep only one of ${defined.join(', ')}`,
    )
  }
  if (env.REDIS_URL) layer.redis = env.REDIS_URL
  if (env.REDIS_SENTINELS) {
    const sentinels = parseAddressList(env.REDIS_SENTINELS, 'REDIS_SENTINELS')
    // The name is filled in (or reported missing) by toTopology, like any other fill-in.
    layer.redis = { sentinels, name: '' } satisfies SentinelConfig
  }
  if (env.REDIS_CLUSTER_NODES)
    layer.redis = { cluster: parseAddressList(env.REDIS_CLUSTER_NODES, 'REDIS_CLUSTER_NODES') }
  if (env.REDKIT_PREFIX) layer.prefix = env.REDKIT_PREFIX
  return layer
}

/** Parses `host:port,host:port` (IPv6 as `[::1]:port`). */
export function parseAddressList(value: string, field: string): HostPort[] {
  const items = value
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
  if (items.length === 0) throw new ConfigError(field, 'is empty', ADDRESS_LIST_FIX)
  return items.map((item) => {
    const match = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d+)$/.exec(item)
    const port = Number(match?.[3])
    if (!match || !isPort(port))
      throw new ConfigError(field, `has an invalid address ${JSON.stringify(item)}`, ADDRESS_LIST_FIX)
    return { host: (match[1] ?? match[2]) as string, port }
  })
}

function isPort(port: unknown): port is number {
  return typeof port === 'number' && Number.isInteger(port) && port > 0 && port < 65536
}

function checkAddresses(list: unknown, field: string): HostPort[] {
  if (!Array.isArray(list) || list.length === 0) {
    throw new ConfigError(
      field,
      'must be a non-empty array of { host, port }',
      "write [{ host: '10.0.0.1', port: 26379 }]",
    )
  }
  return list.map((item, i) => {
    const a = item as Partial<HostPort> | null
    if (!a || typeof a.host !== 'string' || a.host.length === 0 || !isPort(Number(a.port))) {
      throw new ConfigError(
        `${field}[${i}]`,
        `is not a valid address: ${JSON.stringify(item)}`,
        "write { host: '10.0.0.1', port: 26379 }",
      )
    }
    return { host: a.host, port: Number(a.port) }
  })
}

/** True for an ioredis `Redis` or `Cluster` instance (duck-typed, so another copy of ioredis works too). */
export function isRedisClient(value: unknown): value is Redis | Cluster {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as Redis).sendCommand === 'function' &&
    typeof (value as Redis).duplicate === 'function'
  )
}

/** Parses a `redis://` or `rediss://` URL into ioredis options. */
export function parseRedisUrl(url: string, field: string): RedisOptions {
  let u: URL
  try {
    u = new URL(url)
  } catch (error) {
    throw new ConfigError(field, `is not a valid URL: ${JSON.stringify(url)}`, URL_FIX, { cause: error })
  }
  if (u.protocol !== 'redis:' && u.protocol !== 'rediss:') {
    throw new ConfigError(field, `has protocol ${JSON.stringify(u.protocol)}`, URL_FIX)
  }
  if (!u.hostname) throw new ConfigError(field, 'has no host', URL_FIX)
  const port = u.port ? Number(u.port) : 6379
  if (!isPort(port)) throw new ConfigError(field, `has an invalid port ${JSON.stringify(u.port)}`, URL_FIX)
  const options: RedisOptions = { host: u.hostname.replace(/^\[(.*)\]$/, '$1'), port }
  const dbText = u.pathname.replace(/^\//, '')
  if (dbText) {
    const db = Number(dbText)
    if (!Number.isInteger(db) || db < 0)
      throw new ConfigError(field, `has an invalid database ${JSON.stringify(dbText)}`, URL_FIX)
    options.db = db
  }
  if (u.username) options.username = decodeURIComponent(u.username)
  if (u.password) options.password = decodeURIComponent(u.password)
  if (u.protocol === 'rediss:') options.tls = { servername: options.host }
  return options
}

function parseTls(value: string | undefined): boolean | undefined {
  if (value === undefined || value === '') return undefined
  if (/^(1|true|yes|on)$/i.test(value)) return true
  if (/^(0|false|no|off)$/i.test(value)) return false
  throw new ConfigError(
    'REDIS_TLS',
    `must be true or false, got ${JSON.stringify(value)}`,
    'write REDIS_TLS=true or unset it',
  )
}

/** Fills credentials the chosen input leaves out from `REDIS_USERNAME`, `REDIS_PASSWORD`, `REDIS_TLS`. */
function fillCredentials<
  T extends { username?: string | undefined; password?: string | undefined; tls?: unknown },
>(target: T, env: Record<string, string | undefined>): T {
  const out = { ...target }
  if (out.username === undefined && env.REDIS_USERNAME) out.username = env.REDIS_USERNAME
  if (out.password === undefined && env.REDIS_PASSWORD) out.password = env.REDIS_PASSWORD
  const tls = parseTls(env.REDIS_TLS)
  if (out.tls === undefined && tls) out.tls = {}
  return out
}

function toTopology(input: RedisInput, field: string, env: Record<string, string | undefined>): Topology {
  if (isRedisClient(input)) {
    const client = input
    const kind: TopologyKind = (client as Cluster).isCluster
      ? 'cluster'
      : ((client as Redis).options?.sentinels?.length ?? 0) > 0
        ? 'sentinel'
        : 'standalone'
    return { kind, client }
  }
  if (typeof input === 'string') {
    return { kind: 'standalone', options: fillCredentials(parseRedisUrl(input, field), env) }
  }
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw new ConfigError(field, 'must be a URL string, an options object or an ioredis client', URL_FIX)
  }
  const hasSentinels = 'sentinels' in input && input.sentinels !== undefined
  const hasCluster = 'cluster' in input && input.cluster !== undefined
  if (hasSentinels && hasCluster) {
    throw new ConfigError(
      field,
      'has both sentinels and cluster',
      'keep one: Sentinel and Cluster are different deployments',
    )
  }
  if (hasCluster) {
    const { cluster, ...clusterOptions } = input as ClusterConfig
    const nodes = checkAddresses(cluster, `${field}.cluster`)
    const redisOptions = fillCredentials({ ...(clusterOptions.redisOptions ?? {}) }, env)
    return { kind: 'cluster', nodes, options: { ...clusterOptions, redisOptions } }
  }
  if (hasSentinels) {
    const config = input as SentinelConfig
    const sentinels = checkAddresses(
      config.sentinels,
      field === 'REDIS_SENTINELS' ? field : `${field}.sentinels`,
    )
    const name = config.name || env.REDIS_SENTINEL_NAME
    if (!name || typeof name !== 'string') {
      throw new ConfigError(
        field === 'REDIS_SENTINELS' ? 'REDIS_SENTINEL_NAME' : `${field}.name`,
        'is missing: Sentinel needs the master group name',
        "set it to the name in 'sentinel monitor <name> ...' (often 'mymaster')",
      )
    }
    if (config.role !== undefined && config.role !== 'master' && config.role !== 'slave') {
      throw new ConfigError(
        `${field}.role`,
        `must be 'master' or 'slave', got ${JSON.stringify(config.role)}`,
        "write 'master'",
      )
    }
    const options: RedisOptions = fillCredentials({ ...config, sentinels, name }, env)
    if (options.sentinelPassword === undefined && env.REDIS_SENTINEL_PASSWORD)
      options.sentinelPassword = env.REDIS_SENTINEL_PASSWORD
    if (options.tls && options.enableTLSForSentinelMode === undefined && parseTls(env.REDIS_TLS)) {
      options.enableTLSForSentinelMode = true
    }
    return { kind: 'sentinel', options }
  }
  const options = input as RedisOptions
  if (options.port !== undefined && !isPort(Number(options.port))) {
    throw new ConfigError(
      `${field}.port`,
      `is not a valid port: ${JSON.stringify(options.port)}`,
      'write 6379',
    )
  }
  return { kind: 'standalone', options: fillCredentials({ ...options }, env) }
}
