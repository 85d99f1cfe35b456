import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Redis } from 'ioredis'
import { describe, expect, it } from 'vitest'
import { parseAddressList, parseRedisUrl, resolveConfig } from '../../src/connection/config.js'
import { ConfigError, keyPart, ModuleKeys, parseDuration, scanPattern } from '../../src/index.js'

const dir = mkdtempSync(join(tmpdir(), 'redkit-config-'))
function configFile(content: unknown): string {
  const path = join(dir, `c-${Math.random().toString(36).slice(2)}.json`)
  writeFileSync(path, typeof content === 'string' ? content : JSON.stringify(content))
  return path
}

function configError(fn: () => unknown): ConfigError {
  try {
    fn()
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError)
    expect((error as ConfigError).code).toBe('E_CONFIG')
    return error as ConfigError
  }
  throw new Error('expected a ConfigError')
}

describe('config resolution', () => {
  it('defaults to redis://127.0.0.1:6379 with prefix redkit and a 1 s command timeout', () => {
    const c = resolveConfig({ env: {}, configFile: false })
    expect(c.topology).toEqual({ kind: 'standalone', options: { host: '127.0.0.1', port: 6379 } })
    expect(c.prefix).toBe('redkit')
    expect(c.commandTimeoutMs).toBe(1000)
    expect(c.breaker).toEqual({ threshold: 5, cooldownMs: 1000 })
  })

  it('parses redis:// and rediss:// URLs with user, password and db', () => {
    expect(parseRedisUrl('redis://alice:s%40cret@cache.local:6380/3', 'redis')).toEqual({
      host: 'cache.local',
      port: 6380,
      username: 'alice',
      password: 's@cret',
      db: 3,
    })
    expect(parseRedisUrl('rediss://[::1]', 'redis')).toEqual({
      host: '::1',
      port: 6379,
      tls: { servername: '::1' },
    })
  })

  it('rejects malformed URLs naming the field and what to write', () => {
    for (const url of ['not a url', 'http://host:6379', 'redis://host:99999', 'redis://host/x']) {
      const error = configError(() => resolveConfig({ redis: url, env: {}, configFile: false }))
      expect(error.field).toBe('redis')
      expect(error.message).toMatch(/redis:\/\//)
    }
    const fromEnv = configError(() => resolveConfig({ env: { REDIS_URL: 'redis://h:0' }, configFile: false }))
    expect(fromEnv.field).toBe('REDIS_URL')
  })

  it('reads Sentinel settings from the environment', () => {
    const c = resolveConfig({
      env: {
        REDIS_SENTINELS: '10.0.0.1:26379, [::1]:26380',
        REDIS_SENTINEL_NAME: 'mymaster',
        REDIS_SENTINEL_PASSWORD: 'sp',
        REDIS_PASSWORD: 'mp',
      },
      configFile: false,
    })
    expect(c.topology.kind).toBe('sentinel')
    const options = (c.topology as unknown as { options: Record<string, unknown> }).options
    expect(options.sentinels).toEqual([
      { host: '10.0.0.1', port: 26379 },
      { host: '::1', port: 26380 },
    ])
    expect(options.name).toBe('mymaster')
    expect(options.sentinelPassword).toBe('sp')
    expect(options.password).toBe('mp')
  })

  it('refuses Sentinels without a master name', () => {
    const fromEnv = configError(() =>
      resolveConfig({ env: { REDIS_SENTINELS: 'h:26379' }, configFile: false }),
    )
    expect(fromEnv.field).toBe('REDIS_SENTINEL_NAME')
    const fromOptions = configError(() =>
      resolveConfig({
        redis: { sentinels: [{ host: 'h', port: 26379 }], name: '' },
        env: {},
        configFile: false,
      }),
    )
    expect(fromOptions.field).toBe('redis.name')
  })

  it('refuses contradictory settings', () => {
    const both = configError(() =>
      resolveConfig({ env: { REDIS_URL: 'redis://h', REDIS_CLUSTER_NODES: 'h:7000' }, configFile: false }),
    )
    expect(both.field).toBe('REDIS_URL and REDIS_CLUSTER_NODES')
    const mixed = configError(() =>
      resolveConfig({
        redis: { sentinels: [{ host: 'h', port: 1 }], name: 'm', cluster: [{ host: 'h', port: 2 }] } as never,
        env: {},
        configFile: false,
      }),
    )
    expect(mixed.message).toMatch(/both sentinels and cluster/)
  })

  it('reads Cluster nodes from the environment and fills credentials', () => {
    const c = resolveConfig({
      env: {
        REDIS_CLUSTER_NODES: 'n1:7000,n2:7001',
        REDIS_USERNAME: 'u',
        REDIS_PASSWORD: 'p',
        REDIS_TLS: 'true',
      },
      configFile: false,
    })
    expect(c.topology).toMatchObject({
      kind: 'cluster',
      nodes: [
        { host: 'n1', port: 7000 },
        { host: 'n2', port: 7001 },
      ],
      options: { redisOptions: { username: 'u', password: 'p', tls: {} } },
    })
  })

  it('rejects malformed address lists and REDIS_TLS values', () => {
    expect(() => parseAddressList('h1:26379,h2', 'REDIS_SENTINELS')).toThrow(ConfigError)
    expect(() => parseAddressList('', 'REDIS_SENTINELS')).toThrow(/is empty/)
    const tls = configError(() =>
      resolveConfig({ env: { REDIS_URL: 'redis://h', REDIS_TLS: 'maybe' }, configFile: false }),
    )
    expect(tls.field).toBe('REDIS_TLS')
  })

  it('applies precedence: explicit options > environment > file > defaults', () => {
    const file = configFile({
      redis: 'redis://file-host:1111',
      prefix: 'file',
      commandTimeout: '3s',
      connectTimeout: 4000,
    })
    const env = { REDIS_URL: 'redis://env-host:2222', REDKIT_PREFIX: 'env', REDKIT_CONFIG: file }

    const fileOnly = resolveConfig({ env: { REDKIT_CONFIG: file } })
    expect(fileOnly.topology).toMatchObject({ options: { host: 'file-host', port: 1111 } })
    expect(fileOnly.prefix).toBe('file')
    expect(fileOnly.commandTimeoutMs).toBe(3000)

    const envOverFile = resolveConfig({ env })
    expect(envOverFile.topology).toMatchObject({ options: { host: 'env-host', port: 2222 } })
    expect(envOverFile.prefix).toBe('env')
    expect(envOverFile.commandTimeoutMs).toBe(3000) // only the file sets it
    expect(envOverFile.connectTimeoutMs).toBe(4000)

    const explicit = resolveConfig({
      env,
      redis: 'redis://opt-host:3333',
      prefix: 'opt',
      commandTimeout: 250,
    })
    expect(explicit.topology).toMatchObject({ options: { host: 'opt-host', port: 3333 } })
    expect(explicit.prefix).toBe('opt')
    expect(explicit.commandTimeoutMs).toBe(250)
  })

  it('fills credentials from the environment only where the chosen input leaves them out', () => {
    const c = resolveConfig({
      redis: 'redis://:urlpass@h:6379',
      env: { REDIS_PASSWORD: 'envpass', REDIS_USERNAME: 'envuser' },
      configFile: false,
    })
    expect(c.topology).toMatchObject({ options: { password: 'urlpass', username: 'envuser' } })
  })

  it('reports an unreadable, invalid or unknown config file', () => {
    expect(
      configError(() => resolveConfig({ env: { REDKIT_CONFIG: join(dir, 'missing.json') } })).field,
    ).toBe('REDKIT_CONFIG')
    expect(configError(() => resolveConfig({ env: {}, configFile: configFile('{ nope') })).message).toMatch(
      /not valid JSON/,
    )
    expect(configError(() => resolveConfig({ env: {}, configFile: configFile([1]) })).message).toMatch(
      /JSON object/,
    )
    expect(configError(() => resolveConfig({ env: {}, configFile: configFile({ prefx: 'x' }) })).field).toBe(
      'REDKIT_CONFIG.prefx',
    )
  })

  it('checks prefix, durations and breaker options', () => {
    expect(configError(() => resolveConfig({ prefix: 'a{b}', env: {}, configFile: false })).field).toBe(
      'prefix',
    )
    expect(configError(() => resolveConfig({ prefix: '', env: {}, configFile: false })).field).toBe('prefix')
    expect(
      configError(() => resolveConfig({ commandTimeout: 'soon', env: {}, configFile: false })).field,
    ).toBe('commandTimeout')
    expect(configError(() => resolveConfig({ commandTimeout: 0, env: {}, configFile: false })).field).toBe(
      'commandTimeout',
    )
    expect(
      configError(() => resolveConfig({ breaker: { threshold: 0 }, env: {}, configFile: false })).field,
    ).toBe('breaker.threshold')
    expect(resolveConfig({ breaker: false, env: {}, configFile: false }).breaker).toBeNull()
    expect(resolveConfig({ env: {}, configFile: false }).autoPipelining).toBe(true)
    expect(resolveConfig({ autoPipelining: false, env: {}, configFile: false }).autoPipelining).toBe(false)
    expect(
      configError(() => resolveConfig({ autoPipelining: 'no' as never, env: {}, configFile: false })).field,
    ).toBe('autoPipelining')
    expect(
      configError(() => resolveConfig({ redis: { port: 70000 }, env: {}, configFile: false })).field,
    ).toBe('redis.port')
  })

  it('accepts an existing client without owning it', () => {
    const client = new Redis({ lazyConnect: true })
    const c = resolveConfig({ redis: client, env: { REDIS_URL: 'redis://ignored' }, configFile: false })
    expect(c.topology).toEqual({ kind: 'standalone', client })
    client.disconnect()
  })
})

describe('durations', () => {
  it('accepts milliseconds and unit strings', () => {
    expect(parseDuration(1500, 'x')).toBe(1500)
    expect(parseDuration('250ms', 'x')).toBe(250)
    expect(parseDuration('30s', 'x')).toBe(30_000)
    expect(parseDuration('10m', 'x')).toBe(600_000)
    expect(parseDuration('1.5h', 'x')).toBe(5_400_000)
    expect(parseDuration('1d', 'x')).toBe(86_400_000)
  })

  it('rejects negative, infinite and unknown values naming the field', () => {
    for (const bad of [-1, Number.NaN, Number.POSITIVE_INFINITY, '5 parsecs', '', '-3s']) {
      expect(() => parseDuration(bad, 'ttl')).toThrow(/ttl/)
    }
  })
})

describe('keys', () => {
  it('builds prefix:module:parts and escapes separators and braces', () => {
    const keys = new ModuleKeys('shop', 'session')
    expect(keys.key('user', 42)).toBe('shop:session:user:42')
    expect(keys.key('a:b')).not.toBe(keys.key('a', 'b'))
    expect(keyPart('{x}:%')).toBe('%7Bx%7D%3A%25')
  })

  it('puts one hash tag after the module so tagged keys share a slot', () => {
    const keys = new ModuleKeys('shop', 'lock')
    expect(keys.tagged('daily{report}', 'fence')).toBe('shop:lock:{daily%7Breport%7D}:fence')
    expect(keys.pattern()).toBe('shop:lock:*')
    expect(new ModuleKeys('a*b', 'm').pattern()).toBe('a\\*b:m:*')
    expect(scanPattern('p?[x]:')).toBe('p\\?\\[x\\]:*')
  })
})
