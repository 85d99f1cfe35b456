import { describe, expect, it } from 'vitest'
import {
  changedOnTheWay,
  decideStore,
  decodeEntry,
  encodeResponse,
  encodeVaryMarker,
  evaluate,
  type FreshnessOptions,
  isValidHost,
  isValidScheme,
  normalizeQuery,
  notModified,
  parseCacheControl,
  parseVary,
  type StoredMeta,
  urlKey,
  variantId,
} from '../../src/http-cache/index.js'

const OPTIONS: FreshnessOptions = {
  ttlMs: 60_000,
  forceTtl: false,
  staleWhileRevalidateMs: 0,
  staleIfErrorMs: 0,
  keepStaleMs: 300_000,
  tagHeaders: ['surrogate-key'],
}
const GET = { method: 'GET', url: '/x', headers: {} }

function stored(cacheControl: string, extra: Record<string, string> = {}, now = Date.now()): StoredMeta {
  const d = decideStore(
    GET,
    { status: 200, headers: { 'cache-control': cacheControl, ...extra } },
    [],
    OPTIONS,
    now,
  )
  if (!d.store) throw new Error(`not stored: ${d.reason}`)
  return d.meta
}

describe('Cache-Control parsing', () => {
  it('keeps quoted commas, lower-cases names, flags conflicting duplicates', () => {
    const cc = parseCacheControl('Max-Age=5, ext="a, b", no-cache, max-age=6')
    expect(cc.values.get('ext')).toBe('a, b')
    expect(cc.values.has('no-cache')).toBe(true)
    expect(cc.conflicting.has('max-age')).toBe(true)
    expect(parseCacheControl(', ,=, "').values.size).toBe(0)
  })
})

describe('decideStore', () => {
  it('prefers s-maxage over max-age over Expires, and ttl only without them', () => {
    expect(stored('s-maxage=10, max-age=5').lifetime).toBe(10)
    expect(stored('max-age=5').lifetime).toBe(5)
    expect(stored('public').lifetime).toBe(60)
    const now = Date.now()
    const date = new Date(now).toUTCString()
    const meta = stored('', { date, expires: new Date(now + 30_000).toUTCString() }, now)
    expect(Math.round(meta.lifetime)).toBe(30)
  })

  it('s-maxage is never stale through the option windows, only through its own directives', () => {
    const windows = { ...OPTIONS, staleWhileRevalidateMs: 60_000, staleIfErrorMs: 60_000 }
    const meta = (cc: string) => {
      const d = decideStore(GET, { status: 200, headers: { 'cache-control': cc } }, [], windows)
      if (!d.store) throw new Error(`not stored: ${d.reason}`)
      return d.meta
    }
    expect([meta('max-age=1').swr, meta('max-age=1').sie]).toEqual([60, 60])
    expect([meta('s-maxage=1').swr, meta('s-maxage=1').sie]).toEqual([0, 0])
    expect([meta('s-maxage=1, max-age=10').swr, meta('s-maxage=1, max-age=10').sie]).toEqual([0, 0])
    const own = meta('s-maxage=1, stale-while-revalidate=30, stale-if-error=40')
    expect([own.swr, own.sie]).toEqual([30, 40])
    expect(meta('s-maxage=1, must-revalidate, stale-while-revalidate=30').swr).toBe(0)
  })

  it('refuses an event stream, which is a live feed', () => {
    const head = { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'max-age=60' }
    expect(decideStore(GET, { status: 200, headers: head }, [], OPTIONS)).toMatchObject({
      reason: 'event-stream',
    })
  })

  it('refuses Set-Cookie, Vary: *, private, no-store, invalid max-age and POST', () => {
    const refuse = (headers: Record<string, string>, req = GET) =>
      decideStore(req, { status: 200, headers }, [], OPTIONS)
    expect(refuse({ 'set-cookie': 'a=1', 'cache-control': 'public, max-age=60' })).toMatchObject({
      reason: 'set-cookie',
    })
    expect(refuse({ vary: 'accept, *' })).toMatchObject({ reason: 'vary-star' })
    expect(refuse({ 'cache-control': 'private, max-age=60' }).store).toBe(false)
    expect(refuse({ 'cache-control': 'no-store' }).store).toBe(false)
    expect(refuse({ 'cache-control': 'max-age=1e3' })).toMatchObject({ reason: 'invalid-cache-control' })
    expect(refuse({ 'cache-control': 'max-age=60' }, { method: 'POST', url: '/x', headers: {} }).store).toBe(
      false,
    )
  })

  it('subtracts the Age the origin sent', () => {
    const d = decideStore(
      GET,
      { status: 200, headers: { 'cache-control': 'max-age=100', age: '40' } },
      [],
      OPTIONS,
    )
    expect(d.store && Math.round(d.freshMs / 1000)).toBe(60)
  })
})

describe('evaluate', () => {
  it('applies request max-age, min-fresh and max-stale, never max-stale for must-revalidate', () => {
    const now = Date.now()
    const meta = stored('max-age=10', {}, now - 20_000)
    expect(evaluate(meta, {}, now).use).toBe('revalidate')
    expect(evaluate(meta, { 'cache-control': 'max-stale=15' }, now).use).toBe('stale-allowed')
    expect(evaluate(meta, { 'cache-control': 'max-stale=5' }, now).use).toBe('revalidate')
    const strict = stored('max-age=10, must-revalidate', { etag: '"a"' }, now - 20_000)
    expect(evaluate(strict, { 'cache-control': 'max-stale' }, now).use).toBe('revalidate')
    const fresh = stored('max-age=100', {}, now - 20_000)
    expect(evaluate(fresh, { 'cache-control': 'max-age=10' }, now).use).toBe('revalidate')
    expect(evaluate(fresh, { 'cache-control': 'min-fresh=90' }, now).use).toBe('revalidate')
    expect(evaluate(fresh, { 'cache-control': 'max-age=abc' }, now).use).toBe('fresh')
  })

  it('serves stale-while-revalidate inside the window and refuses Authorization unless allowed', () => {
    const now = Date.now()
    const meta = stored('max-age=10, stale-while-revalidate=30', {}, now - 20_000)
    expect(evaluate(meta, {}, now).use).toBe('stale-while-revalidate')
    expect(evaluate(meta, { authorization: 'Bearer x' }, now).use).toBe('none')
    expect(evaluate(stored('public, max-age=10'), { authorization: 'Bearer x' }).use).toBe('fresh')
  })
})

describe('validators', () => {
  it('If-None-Match uses weak comparison and ignores garbage; If-Modified-Since ignores bad dates', () => {
    const meta = stored('max-age=60', {
      etag: 'W/"v1"',
      'last-modified': new Date(Date.now() - 60_000).toUTCString(),
    })
    expect(notModified(meta, { 'if-none-match': '"v1"' })).toBe(true)
    expect(notModified(meta, { 'if-none-match': 'garbage, "v2"' })).toBe(false)
    expect(notModified(meta, { 'if-modified-since': new Date().toUTCString() })).toBe(true)
    expect(notModified(meta, { 'if-modified-since': 'yesterday' })).toBe(false)
  })
})

describe('what went out', () => {
  const captured = (
    sent: { status: number; headers: Record<string, string> } | undefined,
    replaced = false,
  ) => ({
    status: 200,
    headers: { 'cache-control': 'max-age=60' },
    body: Buffer.from('x'),
    held: false,
    sent,
    replaced,
  })

  it('refuses a response whose head changed as it was written, or whose end was replaced', () => {
    const same = { status: 200, headers: { 'cache-control': 'max-age=60', 'x-cache': 'MISS' } }
    expect(changedOnTheWay(captured(same))).toBe(false)
    expect(changedOnTheWay(captured(undefined))).toBe(false)
    expect(changedOnTheWay(captured(same, true))).toBe(true)
    expect(changedOnTheWay(captured({ ...same, status: 503 }))).toBe(true)
    expect(
      changedOnTheWay(captured({ status: 200, headers: { ...same.headers, 'set-cookie': 'sid=1' } })),
    ).toBe(true)
    expect(changedOnTheWay(captured({ status: 200, headers: { 'cache-control': 'private' } }))).toBe(true)
  })
})

describe('keys and entries', () => {
  it('sorts and filters the query, hashes long URLs, separates variants', () => {
    const q = { sort: true, include: new Set<string>(), exclude: new Set(['utm_source']) }
    expect(normalizeQuery('b=2&utm_source=x&a=1', q)).toBe('a=1&b=2')
    expect(urlKey('HTTPS', 'Example.COM', '/p', 'a=1', q)).toBe('https://example.com /p?a=1')
    expect(urlKey('https', 'h', `/${'x'.repeat(500)}`, '', q).length).toBeLessThan(60)
    expect(parseVary('Accept-Encoding, accept-language')).toEqual(['accept-encoding', 'accept-language'])
    expect(parseVary('bad header')).toBe('*')
    expect(variantId(['accept'], { accept: 'a' })).not.toBe(variantId(['accept'], {}))
    expect(variantId(['accept'], { accept: '' })).not.toBe(variantId(['accept'], {}))
  })

  it('keeps host and path apart, and accepts only valid hosts and schemes', () => {
    const q = { sort: false, include: new Set<string>(), exclude: new Set<string>() }
    expect(urlKey('https', 'shop.example/api', '/42', '', q)).not.toBe(
      urlKey('https', 'shop.example', '/api/42', '', q),
    )
    for (const host of [
      'shop.example',
      'shop.example:8080',
      '127.0.0.1:80',
      '[::1]',
      '[2001:db8::1]:443',
      '',
      'a%20b',
    ])
      expect(isValidHost(host)).toBe(true)
    for (const host of [
      'shop.example/api',
      'shop.example:80/api',
      'a b',
      'a@b',
      'a?b',
      'a#b',
      '[::1',
      '[zz]',
      'h:8x',
      '%zz',
    ])
      expect(isValidHost(host)).toBe(false)
    expect([
      isValidScheme('https'),
      isValidScheme('svn+ssh'),
      isValidScheme('1http'),
      isValidScheme('ht tp'),
    ]).toEqual([true, true, false, false])
  })

  it('round-trips any bytes and rejects truncated or foreign entries', () => {
    const body = Buffer.from([0, 255, 1, 254, 0x1f, 0x8b])
    const meta = stored('max-age=60')
    const decoded = decodeEntry(encodeResponse(meta, body))
    expect(decoded?.kind === 'response' && Buffer.compare(decoded.body, body)).toBe(0)
    expect(decodeEntry(encodeResponse(meta, body).subarray(0, 10))).toBeUndefined()
    expect(decodeEntry(Buffer.from('hello'))).toBeUndefined()
    expect(decodeEntry(encodeVaryMarker(['accept'], 'g1'))).toEqual({
      kind: 'vary',
      fields: ['accept'],
      generation: 'g1',
    })
  })
})
