import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  CodecError,
  ConfigError,
  createRedkit,
  normalizeQuery,
  QueryCache,
  QueryInputError,
  type Redkit,
  type RedkitEventMap,
} from '../../src/index.js'
import { type StandaloneRedis, startRedis, uniquePrefix } from '../helpers/index.js'

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
let redis: StandaloneRedis
let kitA: Redkit
let kitB: Redkit

function record<K extends keyof RedkitEventMap>(kit: Redkit, name: K): RedkitEventMap[K][] {
  const seen: RedkitEventMap[K][] = []
  kit.on(name, (payload) => seen.push(payload))
  return seen
}

async function eventually(check: () => boolean | Promise<boolean>, ms = 3000): Promise<void> {
  const deadline = Date.now() + ms
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('condition not met in time')
    await sleep(20)
  }
}

beforeAll(async () => {
  redis = await startRedis()
  const prefix = uniquePrefix('queries')
  kitA = createRedkit({ redis: redis.url, prefix, configFile: false, env: {} })
  kitB = createRedkit({ redis: redis.url, prefix, configFile: false, env: {} })
  kitA.queries
  kitB.queries
  await sleep(200)
})

afterAll(async () => {
  await kitA?.close()
  await kitB?.close()
  await redis?.stop()
})

describe('query keys', () => {
  it('ignore whitespace-only differences but not differences inside literals', () => {
    expect(normalizeQuery('  SELECT *\n\tFROM   orders\nWHERE id = $1  ')).toBe(
      'SELECT * FROM orders WHERE id = $1',
    )
    expect(normalizeQuery("SELECT 'a   b'")).toBe("SELECT 'a   b'")
    expect(normalizeQuery('SELECT "odd  name" FROM t')).toBe('SELECT "odd  name" FROM t')
    expect(normalizeQuery("SELECT 'it''s   x'  ,  1")).toBe("SELECT 'it''s   x' , 1")
    expect(normalizeQuery('SELECT $$a   b$$')).toBe('SELECT $$a   b$$')
    const q = kitA.queries
    expect(q.keyFor('SELECT 1 FROM t WHERE a = $1', [1])).toBe(
      q.keyFor('SELECT 1\n  FROM t\n  WHERE a = $1', [1]),
    )
    expect(q.keyFor("SELECT 'a b'", [])).not.toBe(q.keyFor("SELECT 'a  b'", []))
  })

  it('keep apart queries that comments, escapes, string continuations or dollar tags make different', () => {
    const q = kitA.queries
    const apart: Array<[string, string]> = [
      // The newline ends the comment: the first filters, the second returns every row.
      ['SELECT id FROM t -- list\nWHERE id = 1', 'SELECT id FROM t -- list WHERE id = 1'],
      // A backslash escapes nothing in a standard string: 'x\' ends there.
      ["SELECT 'x\\' AS p, 'a  b'", "SELECT 'x\\' AS p, 'a b'"],
      // ... but does in an E'' string, which then goes on past the escaped quote.
      ["SELECT E'x\\'  y'", "SELECT E'x\\' y'"],
      // A quote inside a comment opens nothing.
      ["SELECT /* it's */ 'a  b'", "SELECT /* it's */ 'a b'"],
      ["SELECT 1 -- it's\n, 'a  b'", "SELECT 1 -- it's\n, 'a b'"],
      // Dollar-quote tags may hold digits.
      ['SELECT $a1$x  y$a1$', 'SELECT $a1$x y$a1$'],
      // Literals separated by a newline are one literal; on one line they are a syntax error.
      ["SELECT 'a'\n'b'", "SELECT 'a' 'b'"],
    ]
    for (const [a, b] of apart) expect(q.keyFor(a, []), `${a} / ${b}`).not.toBe(q.keyFor(b, []))
    expect(q.keyFor('SELECT 1 -- first\n   FROM t', [])).toBe(q.keyFor('SELECT 1   -- first\nFROM t  ', []))
    expect(normalizeQuery('SELECT 1  -- c\n\n  FROM t\n')).toBe('SELECT 1 -- c\nFROM t')
    expect(normalizeQuery("SELECT E'a\\'b'   ,  1")).toBe("SELECT E'a\\'b' , 1")
    expect(normalizeQuery('SELECT  /* a  b */  1')).toBe('SELECT /* a  b */ 1')
    expect(normalizeQuery("SELECT 'a'\n  'b'  ,  1")).toBe("SELECT 'a'\n'b' , 1")
  })

  it('encode parameters with their types', () => {
    const q = kitA.queries
    const sql = 'SELECT * FROM t WHERE a = $1'
    expect(q.keyFor(sql, [1])).not.toBe(q.keyFor(sql, ['1']))
    expect(q.keyFor(sql, [null])).not.toBe(q.keyFor(sql, ['null']))
    expect(q.keyFor(sql, [new Date(0)])).not.toBe(q.keyFor(sql, [new Date(0).toISOString()]))
    expect(q.keyFor(sql, [1n])).not.toBe(q.keyFor(sql, [1]))
    expect(q.keyFor(sql, [1])).toMatch(/^v2:[\w-]{43}$/)
  })
})

describe('kit.queries.getOrExecute', () => {
  it('100 concurrent calls on a cold key across two kits run execute once', async () => {
    let executions = 0
    const sql = 'SELECT sum(total) FROM orders WHERE day = $1'
    const execute = async () => {
      executions++
      await sleep(150)
      return [{ sum: 1234n }]
    }
    const results = await Promise.all(
      Array.from({ length: 100 }, (_, i) =>
        (i % 2 ? kitA : kitB).queries.getOrExecute(sql, ['mon'], execute),
      ),
    )
    expect(executions).toBe(1)
    expect(results.every((r) => r[0]?.sum === 1234n)).toBe(true)
  })

  it('returns results with their types: Date, BigInt, Buffer, null, nested arrays and objects', async () => {
    const rows = [
      {
        id: 1n,
        big: 2n ** 70n,
        at: new Date('2024-01-02T03:04:05.678Z'),
        blob: Buffer.from([1, 2, 3]),
        note: null,
        tags: ['a', ['b', ['c']]],
        meta: { nested: { deep: [{ x: 1 }] } },
      },
    ]
    await kitA.queries.getOrExecute('SELECT typed', [], async () => rows)
    const back = await kitB.queries.getOrExecute('SELECT typed', [], async (): Promise<typeof rows> => {
      throw new Error('should be cached')
    })
    expect(back).toEqual(rows)
    expect(back[0]?.at).toBeInstanceOf(Date)
    expect(typeof back[0]?.big).toBe('bigint')
    expect(Buffer.isBuffer(back[0]?.blob)).toBe(true)
  })

  it('serves a stale result within grace while one refresh runs', async () => {
    let version = 0
    let finished = 0
    const execute = async () => {
      version++
      await sleep(50)
      finished++
      return [{ version }]
    }
    const options = { ttl: 100, grace: '1m', jitter: 0 }
    await kitA.queries.getOrExecute('SELECT stale', [], execute, options)
    await sleep(150)
    const served = await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        (i % 2 ? kitA : kitB).queries.getOrExecute('SELECT stale', [], execute, options),
      ),
    )
    expect(served.every((r) => r[0]?.version === 1)).toBe(true)
    // One refresh for the ten stale reads. Waited for without reading the query again: the refreshed
    // result is stale 100 ms later, and a read then would rightly start the next refresh.
    await eventually(async () => finished === 2)
    expect(version).toBe(2)
    await eventually(
      async () =>
        ((await kitA.queries.getOrExecute('SELECT stale', [], execute, options))[0]?.version ?? 0) >= 2,
    )
  })

  it('serves the stale result when the query throws within staleIfError', async () => {
    let fail = false
    const execute = async () => {
      if (fail) throw new Error('connection to database lost')
      return ['ok']
    }
    const options = { ttl: 100, staleIfError: '10s', jitter: 0 }
    await kitA.queries.getOrExecute('SELECT sie', [], execute, options)
    await sleep(150)
    fail = true
    expect(await kitA.queries.getOrExecute('SELECT sie', [], execute, options)).toEqual(['ok'])
    expect(await kitB.queries.getOrExecute('SELECT sie', [], execute, options)).toEqual(['ok'])
    await expect(kitA.queries.getOrExecute('SELECT sie2', [], execute, options)).rejects.toThrow(
      'database lost',
    )
  })

  it('caches empty results for negativeTtl only', async () => {
    let executions = 0
    const execute = async () => {
      executions++
      return [] as number[]
    }
    const options = { ttl: '1m', negativeTtl: 100, jitter: 0 }
    await kitA.queries.getOrExecute('SELECT empty', [], execute, options)
    await kitA.queries.getOrExecute('SELECT empty', [], execute, options)
    expect(executions).toBe(1)
    const ttl = await kitA.redis.pttl(kitA.queries.engine.redisKey(kitA.queries.keyFor('SELECT empty', [])))
    expect(ttl).toBeGreaterThan(0)
    expect(ttl).toBeLessThanOrEqual(100)
    await sleep(150)
    await kitA.queries.getOrExecute('SELECT empty', [], execute, options)
    expect(executions).toBe(2)
    // negativeTtl 0: empty results are not cached at all.
    await kitA.queries.getOrExecute('SELECT empty0', [], execute, { negativeTtl: 0 })
    await kitA.queries.getOrExecute('SELECT empty0', [], execute, { negativeTtl: 0 })
    expect(executions).toBe(4)
    // Non-empty results keep the full ttl.
    await kitA.queries.getOrExecute('SELECT full', [], async () => [1], options)
    expect(
      await kitA.redis.pttl(kitA.queries.engine.redisKey(kitA.queries.keyFor('SELECT full', []))),
    ).toBeGreaterThan(50_000)
  })

  it('invalidates by tag in a few round trips however many results carry it, on every instance', async () => {
    let executions = 0
    const execute = async () => ++executions
    for (let i = 0; i < 50; i++) {
      await kitA.queries.getOrExecute('SELECT * FROM orders WHERE id = $1', [i], execute, {
        tags: ['orders'],
      })
    }
    await kitB.queries.getOrExecute('SELECT * FROM orders WHERE id = $1', [0], execute, { tags: ['orders'] })
    expect(executions).toBe(50)
    const commands: number[] = []
    kitA.on('command', () => commands.push(1))
    await kitA.queries.invalidateTags(['orders'])
    expect(commands.length).toBeLessThanOrEqual(2)
    await eventually(async () => {
      const before = executions
      await kitB.queries.getOrExecute('SELECT * FROM orders WHERE id = $1', [0], execute, {
        tags: ['orders'],
      })
      return executions > before
    })
    for (let i = 1; i < 50; i++) {
      await kitA.queries.getOrExecute('SELECT * FROM orders WHERE id = $1', [i], execute, {
        tags: ['orders'],
      })
    }
    expect(executions).toBe(100)
  })

  it('invalidate(query, params) removes one result', async () => {
    let executions = 0
    const execute = async () => ++executions
    await kitA.queries.getOrExecute('SELECT one WHERE id = $1', [1], execute)
    await kitA.queries.getOrExecute('SELECT one WHERE id = $1', [2], execute)
    await kitA.queries.invalidate('SELECT  one  WHERE id = $1', [1])
    expect(await kitA.queries.getOrExecute('SELECT one WHERE id = $1', [1], execute)).toBe(3)
    expect(await kitA.queries.getOrExecute('SELECT one WHERE id = $1', [2], execute)).toBe(2)
  })

  it('a result read while it is invalidated is not served again from memory', async () => {
    const sql = 'SELECT inflight WHERE id = $1'
    await kitB.queries.getOrExecute(sql, [1], async () => 'old')
    await sleep(50) // kitB's bus message about its write has landed on kitA
    const pending = kitA.queries.getOrExecute(sql, [1], async () => 'unused')
    await kitA.queries.invalidate(sql, [1])
    expect(await pending).toBe('old')
    expect(await kitA.redis.exists(kitA.queries.engine.redisKey(kitA.queries.keyFor(sql, [1])))).toBe(0)
    expect(await kitA.queries.getOrExecute(sql, [1], async () => 'new')).toBe('new')
  })

  it('uses the key option instead of the derived key', async () => {
    let executions = 0
    const execute = async () => ++executions
    await kitA.queries.getOrExecute('SELECT a', [1], execute, { key: 'dashboard:totals' })
    expect(await kitB.queries.getOrExecute('SELECT b', [2], execute, { key: 'dashboard:totals' })).toBe(1)
    expect(await kitA.redis.exists(kitA.queries.engine.redisKey('dashboard:totals'))).toBe(1)
    await kitA.queries.invalidate('SELECT a', [1], { key: 'dashboard:totals' })
    expect(await kitA.queries.getOrExecute('SELECT a', [1], execute, { key: 'dashboard:totals' })).toBe(2)
  })

  it('applies jitter by default', async () => {
    const ttls = new Set<number>()
    for (let i = 0; i < 8; i++) {
      await kitA.queries.getOrExecute('SELECT jitter WHERE i = $1', [i], async () => [i], { ttl: '100s' })
      const ttl = await kitA.redis.pttl(
        kitA.queries.engine.redisKey(kitA.queries.keyFor('SELECT jitter WHERE i = $1', [i])),
      )
      expect(ttl).toBeGreaterThan(89_000)
      expect(ttl).toBeLessThanOrEqual(100_000)
      ttls.add(Math.round(ttl / 100))
    }
    expect(ttls.size).toBeGreaterThan(1)
  })

  it('does not cache results over maxSize, and compresses large results on request', async () => {
    const bypass = record(kitA, 'cache:bypass')
    const big = Array.from({ length: 2000 }, (_, i) => ({ id: i, name: `customer number ${i}` }))
    let executions = 0
    const execute = async () => {
      executions++
      return big
    }
    expect(await kitA.queries.getOrExecute('SELECT big', [], execute, { maxSize: 1000 })).toBe(big)
    expect(await kitA.queries.getOrExecute('SELECT big', [], execute, { maxSize: 1000 })).toBe(big)
    expect(executions).toBe(2)
    expect(bypass.some((b) => b.cache === 'query' && b.reason === 'too-large')).toBe(true)
    await kitA.queries.getOrExecute('SELECT big', [], execute, { compressAbove: 1024 })
    const stored = await kitA.redis.getBuffer(
      kitA.queries.engine.redisKey(kitA.queries.keyFor('SELECT big', [])),
    )
    expect(stored?.length ?? Infinity).toBeLessThan(20_000)
    expect(await kitB.queries.getOrExecute('SELECT big', [], execute)).toEqual(big)
    expect(executions).toBe(3)
  })

  it('refreshes hot keys early with XFetch', async () => {
    let executions = 0
    const execute = async () => {
      executions++
      await sleep(30)
      return executions
    }
    await kitA.queries.getOrExecute('SELECT hot', [], execute, { ttl: 400, xfetch: 1e6, jitter: 0 })
    expect(
      await kitA.queries.getOrExecute('SELECT hot', [], execute, { ttl: 400, xfetch: 1e6, jitter: 0 }),
    ).toBe(1)
    await eventually(() => executions === 2)
  })
})

describe('bad input', () => {
  it('returns a result the codec cannot encode without caching it, with a clear error event', async () => {
    const errors = record(kitA, 'cache:error')
    const result = [{ id: 1, format: () => 'x' }]
    let executions = 0
    const execute = async () => {
      executions++
      return result
    }
    expect(await kitA.queries.getOrExecute('SELECT fn', [], execute)).toBe(result)
    expect(await kitA.queries.getOrExecute('SELECT fn', [], execute)).toBe(result)
    expect(executions).toBe(2)
    expect(errors[0]?.error).toBeInstanceOf(CodecError)
    expect(errors[0]?.error.message).toMatch(/function at \$\[0\]\.format/)
    const circular: Record<string, unknown> = { id: 1 }
    circular.self = circular
    expect(await kitA.queries.getOrExecute('SELECT circ', [], async () => circular)).toBe(circular)
    expect(errors.some((e) => /circular/.test(e.error.message))).toBe(true)
  })

  it('runs the query uncached when its parameters cannot be encoded', async () => {
    const errors = record(kitA, 'cache:error')
    let executions = 0
    const params = [() => 1]
    await kitA.queries.getOrExecute('SELECT p', params, async () => ++executions)
    await kitA.queries.getOrExecute('SELECT p', params, async () => ++executions)
    expect(executions).toBe(2)
    expect(errors.some((e) => e.error instanceof CodecError)).toBe(true)
  })

  it('rejects an empty or non-string query and a missing execute', async () => {
    await expect(kitA.queries.getOrExecute('  ', [], async () => 1)).rejects.toBeInstanceOf(QueryInputError)
    await expect(kitA.queries.getOrExecute(42 as unknown as string, [], async () => 1)).rejects.toMatchObject(
      {
        code: 'E_QUERY_INPUT',
      },
    )
    await expect(
      kitA.queries.getOrExecute('SELECT 1', [], undefined as unknown as () => number),
    ).rejects.toBeInstanceOf(QueryInputError)
  })

  it('rejects bad options with ConfigError at creation', () => {
    expect(() => new QueryCache(kitA, { ttl: 'forever' })).toThrow(ConfigError)
    expect(() => new QueryCache(kitA, { jitter: 1.5 })).toThrow(ConfigError)
    expect(() => new QueryCache(kitA, { xfetch: -1 })).toThrow(ConfigError)
    expect(() => new QueryCache(kitA, { name: 'a:b' })).toThrow(ConfigError)
  })
})
