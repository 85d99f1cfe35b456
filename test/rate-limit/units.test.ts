import { describe, expect, it } from 'vitest'
import { rateLimit } from '../../middleware/index.js'
import { ConfigError, createRedkit, INVALID_IP, ipKey, normalizeCost, UNKNOWN_IP } from '../../src/index.js'
import { legacyHeaders, rateLimitField, retryAfterSeconds } from '../../src/rate-limit/headers.js'
import { resolvePolicyOptions } from '../../src/rate-limit/options.js'
import type { RateLimitResult } from '../../src/rate-limit/policy.js'
import { normalizeKey } from '../../src/rate-limit/policy.js'
import { ResetMarks } from '../../src/rate-limit/reset-marks.js'
import { parseList } from './sf.js'

function result(limits: RateLimitResult['limits'], extra: Partial<RateLimitResult> = {}): RateLimitResult {
  return { allowed: true, retryAfterMs: 0, limits, violated: [], blocked: false, source: 'redis', ...extra }
}

describe('client IP keys', () => {
  it('keeps IPv4 addresses as they are', () => {
    expect(ipKey('203.0.113.7', 64)).toBe('203.0.113.7')
  })

  it('unwraps IPv4-mapped IPv6 addresses, in dotted and hex form', () => {
    expect(ipKey('::ffff:203.0.113.7', 64)).toBe('203.0.113.7')
    expect(ipKey('::FFFF:cb00:7107', 64)).toBe('203.0.113.7')
  })

  it('groups IPv6 addresses by /64 by default, whatever their spelling', () => {
    const a = ipKey('2001:db8:1:2:aaaa:bbbb:cccc:dddd', 64)
    expect(a).toBe('2001:db8:1:2::/64')
    expect(ipKey('2001:0DB8:0001:0002:0000:0000:0000:0001', 64)).toBe(a)
    expect(ipKey('2001:db8:1:2::9', 64)).toBe(a)
    expect(ipKey('2001:db8:1:3::9', 64)).not.toBe(a)
  })

  it('groups by any configured prefix, or not at all with 128', () => {
    expect(ipKey('2001:db8:1:2::9', 48)).toBe('2001:db8:1::/48')
    expect(ipKey('2001:db8:1:2::9', 56)).toBe('2001:db8:1::/56')
    expect(ipKey('2001:db8:1:2ff::9', 56)).toBe('2001:db8:1:200::/56')
    expect(ipKey('2001:db8:1:2::9', 128)).toBe('2001:db8:1:2::9')
    expect(ipKey('::1', 128)).toBe('::1')
  })

  it('drops an IPv6 zone identifier', () => {
    expect(ipKey('fe80::1%eth0', 64)).toBe('fe80::/64')
  })

  it('puts missing and non-IP addresses into shared buckets', () => {
    expect(ipKey(undefined, 64)).toBe(UNKNOWN_IP)
    expect(ipKey('', 64)).toBe(UNKNOWN_IP)
    expect(ipKey('foo{bar}:baz', 64)).toBe(INVALID_IP)
    expect(ipKey('1.2.3.4.5', 64)).toBe(INVALID_IP)
    expect(ipKey('2001:db8::g', 64)).toBe(INVALID_IP)
  })
})

describe('keys', () => {
  it('hashes very long keys and keeps short ones', () => {
    expect(normalizeKey('user:1')).toBe('user:1')
    expect(normalizeKey(42)).toBe('42')
    const long = normalizeKey('x'.repeat(10_000))
    expect(long).toMatch(/^sha256-[0-9a-f]{64}$/)
    expect(normalizeKey('y'.repeat(10_000))).not.toBe(long)
  })
})

describe('cost', () => {
  it('charges a bad computed cost as 1 and rounds fractions up, never free or unlimited', () => {
    expect(normalizeCost(0)).toBe(1)
    expect(normalizeCost(-5)).toBe(1)
    expect(normalizeCost(Number.NaN)).toBe(1)
    expect(normalizeCost('3')).toBe(1)
    expect(normalizeCost(undefined)).toBe(1)
    expect(normalizeCost(2.2)).toBe(3)
    expect(normalizeCost(0.5)).toBe(1)
    expect(normalizeCost(Number.POSITIVE_INFINITY)).toBe(Number.MAX_SAFE_INTEGER)
  })

  it('rejects a static cost of 0, negative, fractional or NaN at creation', () => {
    const kit = createRedkit({ redis: 'redis://127.0.0.1:1', prefix: 't', configFile: false, env: {} })
    for (const cost of [0, -1, 1.5, Number.NaN]) {
      expect(() => rateLimit(kit, { cost })).toThrow(ConfigError)
    }
    void kit.close()
  })
})

describe('policy options', () => {
  it('rejects invalid limits with ConfigError naming the field', () => {
    const bad: Array<[unknown, string]> = [
      [{ limits: [] }, 'p.limits'],
      [{ limits: [{ points: 0, duration: '1s' }] }, 'p.limits[0].points'],
      [{ limits: [{ points: 1.5, duration: '1s' }] }, 'p.limits[0].points'],
      [{ limits: [{ points: 10, duration: '500ms' }] }, 'p.limits[0].duration'],
      [{ limits: [{ points: 10 }] }, 'p.limits[0].duration'],
      [{ limits: [{ name: 'a b', points: 10, duration: '1s' }] }, 'p.limits[0].name'],
      [{ limits: [{ name: 'x"', points: 10, duration: '1s' }] }, 'p.limits[0].name'],
      [
        {
          limits: [
            { name: 'a', points: 1, duration: '1s' },
            { name: 'a', points: 2, duration: '1m' },
          ],
        },
        'p.limits[1].name',
      ],
      [{ name: 'a/b', limits: [{ points: 1, duration: '1s' }] }, 'p.name'],
      [{ limits: [{ points: 1, duration: '1s' }], onRedisError: 'maybe' }, 'p.onRedisError'],
      [{ limits: [{ points: 1, duration: '1s' }], blockDuration: -1 }, 'p.blockDuration'],
      [{ limits: [{ points: 1, duration: '1s' }], blockReplacesWindow: 'yes' }, 'p.blockReplacesWindow'],
    ]
    for (const [options, field] of bad) {
      let error: unknown
      try {
        resolvePolicyOptions(options as never, 'p')
      } catch (e) {
        error = e
      }
      expect(error, JSON.stringify(options)).toBeInstanceOf(ConfigError)
      expect((error as ConfigError).field).toBe(field)
    }
  })

  it('names unnamed limits by points and window, and defaults to onRedisError memory', () => {
    const p = resolvePolicyOptions({ limits: [{ points: 100, duration: '1m' }] }, 'p')
    expect(p.limits[0]?.name).toBe('100-per-60s')
    expect(p.onRedisError).toBe('memory')
    expect(p.blockMs).toBe(0)
    expect(p.blockReplacesWindow).toBe(false)
  })
})

describe('RateLimit header fields (draft-ietf-httpapi-ratelimit-headers-11)', () => {
  it('writes RateLimit-Policy exactly as the draft example of §3.2', () => {
    const p = resolvePolicyOptions({ limits: [{ name: 'default', points: 100, duration: '10s' }] }, 'p')
    expect(p.limits.map((l) => l.policyItem).join(', ')).toBe('"default";q=100;w=10')
  })

  it('writes several policies as one SF List equal to the draft examples of §3 and §3.2', () => {
    const p = resolvePolicyOptions(
      {
        limits: [
          { name: 'permin', points: 50, duration: '1m' },
          { name: 'perhr', points: 1000, duration: '1h' },
        ],
      },
      'p',
    )
    const field = p.limits.map((l) => l.policyItem).join(', ')
    expect(field).toBe('"permin";q=50;w=60, "perhr";q=1000;w=3600')
    expect(parseList(field)).toEqual(parseList('"permin";q=50;w=60,"perhr";q=1000;w=3600'))
    const burst = resolvePolicyOptions(
      {
        limits: [
          { name: 'burst', points: 100, duration: '60s' },
          { name: 'daily', points: 1000, duration: '1d' },
        ],
      },
      'p',
    )
    expect(parseList(burst.limits.map((l) => l.policyItem).join(', '))).toEqual(
      parseList('"burst";q=100;w=60,"daily";q=1000;w=86400'),
    )
  })

  it('writes RateLimit exactly as the draft example of §4 and rounds the window up to whole seconds', () => {
    expect(rateLimitField(result([{ name: 'default', limit: 100, remaining: 50, resetMs: 30_000 }]))).toBe(
      '"default";r=50;t=30',
    )
    expect(rateLimitField(result([{ name: 'default', limit: 100, remaining: 50, resetMs: 29_001 }]))).toBe(
      '"default";r=50;t=30',
    )
    const two = rateLimitField(
      result([
        { name: 'hour', limit: 1000, remaining: 900, resetMs: 1_800_000 },
        { name: 'day', limit: 5000, remaining: 100, resetMs: 36_000_000 },
      ]),
    )
    expect(parseList(two)).toEqual([
      { value: 'hour', params: { r: 900, t: 1800 } },
      { value: 'day', params: { r: 100, t: 36000 } },
    ])
  })

  it('gives Retry-After in whole seconds, at least 1', () => {
    expect(retryAfterSeconds(result([], { allowed: false, retryAfterMs: 4_001 }))).toBe(5)
    expect(retryAfterSeconds(result([], { allowed: false, retryAfterMs: 10 }))).toBe(1)
  })

  it('writes legacy X-RateLimit-* for the tightest limit with an epoch reset', () => {
    const h = legacyHeaders(
      result([
        { name: 'a', limit: 10, remaining: 9, resetMs: 1000 },
        { name: 'b', limit: 100, remaining: 3, resetMs: 60_000 },
      ]),
      1_700_000_000_000,
    )
    expect(h).toEqual({
      'X-RateLimit-Limit': '100',
      'X-RateLimit-Remaining': '3',
      'X-RateLimit-Reset': '1700000060',
    })
  })
})

describe('reset marks of checks in flight', () => {
  it('counts a check as reset only when its own key was reset after it was sent', () => {
    const marks = new ResetMarks()
    const before = marks.now
    marks.mark('login/ann')
    expect(marks.resetSince('login/ann', before)).toBe(true)
    expect(marks.resetSince('login/bob', before)).toBe(false)
    // A check sent after the reset reports what the reset left.
    expect(marks.resetSince('login/ann', marks.now)).toBe(false)
  })

  it('counts every check sent before a possibly missed reset as reset', () => {
    const marks = new ResetMarks()
    const before = marks.now
    marks.markAll()
    expect(marks.resetSince('login/bob', before)).toBe(true)
    expect(marks.resetSince('login/bob', marks.now)).toBe(false)
  })

  it('keeps a bounded number of marks, and counts checks older than a dropped one as reset', () => {
    const marks = new ResetMarks(2)
    const first = marks.now
    marks.mark('a')
    const second = marks.now
    marks.mark('b')
    marks.mark('c') // drops the mark of 'a'
    expect(marks.resetSince('a', first)).toBe(true)
    expect(marks.resetSince('z', first)).toBe(true)
    expect(marks.resetSince('a', second)).toBe(false)
    expect(marks.resetSince('b', second)).toBe(true)
    expect(marks.resetSince('z', second)).toBe(false)
  })
})
