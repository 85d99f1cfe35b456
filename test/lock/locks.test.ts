import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  CodecError,
  ConfigError,
  ConnectionError,
  createLocks,
  createRedkit,
  IdempotencyStore,
  Lock,
  LockBusyError,
  LockLostError,
  LockUnavailableError,
  LuaScript,
  type Redkit,
} from '../../src/index.js'
import { type StandaloneRedis, startRedis, uniquePrefix } from '../helpers/redis-server.js'

const prefix = uniquePrefix('lock')
let redis: StandaloneRedis
let kitA: Redkit
let kitB: Redkit

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

beforeAll(async () => {
  redis = await startRedis()
  kitA = createRedkit({ redis: redis.url, prefix, configFile: false, env: {} })
  kitB = createRedkit({ redis: redis.url, prefix, configFile: false, env: {} })
})
afterAll(async () => {
  await kitA?.close()
  await kitB?.close()
  await redis?.stop()
})

describe('kit.locks: bad input', () => {
  it('rejects empty, non-string and repeated resources and bad durations with ConfigError', async () => {
    await expect(kitA.locks.acquire('')).rejects.toBeInstanceOf(ConfigError)
    await expect(kitA.locks.acquire([])).rejects.toBeInstanceOf(ConfigError)
    await expect(kitA.locks.acquire(['a', 'a'])).rejects.toBeInstanceOf(ConfigError)
    await expect(kitA.locks.acquire([42] as unknown as string[])).rejects.toBeInstanceOf(ConfigError)
    await expect(kitA.locks.acquire('x', { ttl: 'soon' })).rejects.toBeInstanceOf(ConfigError)
    await expect(kitA.locks.acquire('x', { ttl: 5 })).rejects.toBeInstanceOf(ConfigError)
    await expect(kitA.locks.acquire('x', { retry: { attempts: -1 } })).rejects.toBeInstanceOf(ConfigError)
    expect(() => createLocks(kitA, { servers: ['redis://a', 'redis://b'] })).toThrow(ConfigError)
    expect(() => createLocks(kitA, { driftFactor: 2 })).toThrow(ConfigError)
    expect(() => createLocks(kitA, { ttl: '1 fortnight' })).toThrow(/locks\.ttl/)
    await expect(kitA.locks.using('x', 'not a function' as never)).rejects.toBeInstanceOf(ConfigError)
    await expect(kitA.locks.once('', async () => 1)).rejects.toBeInstanceOf(ConfigError)
    await expect(kitA.locks.once('k', async () => 1, { ttl: 'eventually' })).rejects.toBeInstanceOf(
      ConfigError,
    )
    // Nothing was left locked by the refused calls.
    const x = await kitA.locks.tryAcquire('x')
    expect(x).not.toBeNull()
    await x?.release()
  })

  it('keeps resources with separators and braces apart from each other', async () => {
    const a = await kitA.locks.tryAcquire('a:b')
    const b = await kitA.locks.tryAcquire(['a', 'b'])
    const c = await kitA.locks.tryAcquire('{a}:b')
    const d = await kitA.locks.tryAcquire('a:b:fence')
    expect([a, b, c, d].every((l) => l instanceof Lock)).toBe(true)
    for (const l of [a, b, c, d]) await l?.release()
  })
})

describe('kit.locks: acquire, release, extend', () => {
  it('tryAcquire returns null at once while another kit holds the resource', async () => {
    const lock = await kitA.locks.tryAcquire('job:1', { ttl: '5s' })
    expect(lock).not.toBeNull()
    expect(await kitB.locks.tryAcquire('job:1')).toBeNull()
    expect(await lock?.release()).toBe(true)
    const again = await kitB.locks.tryAcquire('job:1')
    expect(again).not.toBeNull()
    expect(again?.fence).toBeGreaterThan(lock?.fence ?? Number.POSITIVE_INFINITY)
    await again?.release()
  })

  it('acquire waits with retries for a lease to be released and reports the wait', async () => {
    const events: string[] = []
    const off = kitB.on('lock:wait', ({ resource }) => events.push(`wait:${resource}`))
    const offAcquired = kitB.on('lock:acquired', ({ resource, waitedMs }) =>
      events.push(`acquired:${resource}:${waitedMs > 0}`),
    )
    const held = await kitA.locks.acquire('job:2', { ttl: '5s' })
    setTimeout(() => void held.release(), 150)
    const lock = await kitB.locks.acquire('job:2', { retry: { attempts: 20, delay: 50, jitter: 10 } })
    expect(lock.fence).toBeGreaterThan(held.fence)
    expect(events).toEqual(['wait:job:2', 'acquired:job:2:true'])
    await lock.release()
    off()
    offAcquired()
  })

  it('gives up with LockBusyError after the bounded retries, naming resource and attempts', async () => {
    const busy: string[] = []
    const off = kitB.on('lock:busy', ({ resource }) => busy.push(resource))
    const held = await kitA.locks.acquire('job:3', { ttl: '5s' })
    const error = await kitB.locks
      .acquire('job:3', { retry: { attempts: 2, delay: 20, jitter: 5 } })
      .catch((e: unknown) => e)
    expect(error).toBeInstanceOf(LockBusyError)
    expect((error as LockBusyError).code).toBe('E_LOCK_BUSY')
    expect((error as LockBusyError).resource).toBe('job:3')
    expect((error as LockBusyError).attempts).toBe(3)
    expect((error as LockBusyError).retryAfterMs).toBeGreaterThan(0)
    expect(busy).toEqual(['job:3'])
    await held.release()
    off()
  })

  it('a wait bound ends the retries in time and an AbortSignal ends them at once', async () => {
    const held = await kitA.locks.acquire('job:4', { ttl: '5s' })
    const started = Date.now()
    await expect(kitB.locks.acquire('job:4', { wait: 300 })).rejects.toBeInstanceOf(LockBusyError)
    expect(Date.now() - started).toBeLessThan(3000)
    const controller = new AbortController()
    setTimeout(() => controller.abort(new Error('shutting down')), 50)
    await expect(kitB.locks.acquire('job:4', { wait: '10s', signal: controller.signal })).rejects.toThrow(
      'shutting down',
    )
    await held.release()
  })

  it('locks several resources all or none', async () => {
    const one = await kitA.locks.acquire('acct:2', { ttl: '5s' })
    expect(await kitB.locks.tryAcquire(['acct:1', 'acct:2'])).toBeNull()
    // The refused multi-lock left nothing behind on acct:1.
    const first = await kitB.locks.tryAcquire('acct:1')
    expect(first).not.toBeNull()
    await first?.release()
    await one.release()
    const both = await kitB.locks.acquire(['acct:1', 'acct:2'])
    expect(both.fences).toHaveLength(2)
    expect(both.fences[1]).toBeGreaterThan(one.fence)
    expect(await kitA.locks.tryAcquire('acct:1')).toBeNull()
    await both.release()
  })

  it('extend keeps the lease past its ttl; extending a lost lease throws LockLostError and fires the signal', async () => {
    const lock = await kitA.locks.acquire('job:5', { ttl: 300 })
    await sleep(200)
    await lock.extend(400)
    await sleep(200)
    expect(await kitB.locks.tryAcquire('job:5')).toBeNull()
    // Steal it: the key vanishes (as after an expiry) and someone else takes it.
    await kitA.redis.del(kitA.keys.module('lock').tagged('job:5', 'job:5'))
    const thief = await kitB.locks.tryAcquire('job:5', { ttl: '5s' })
    expect(thief).not.toBeNull()
    const lost: string[] = []
    const off = kitA.on('lock:lost', ({ resource }) => lost.push(resource))
    const error = await lock.extend().catch((e: unknown) => e)
    expect(error).toBeInstanceOf(LockLostError)
    expect((error as LockLostError).code).toBe('E_LOCK_LOST')
    expect(lock.signal.aborted).toBe(true)
    expect(lock.valid).toBe(false)
    expect(lost).toEqual(['job:5'])
    // Releasing a lease that is not ours any more leaves the thief's lease alone.
    expect(await kitA.locks.release(lock)).toBe(false)
    expect(await kitA.locks.tryAcquire('job:5')).toBeNull()
    await thief?.release()
    off()
  })

  it('release of an expired lease returns false and does not touch the next holder', async () => {
    const lock = await kitA.locks.acquire('job:6', { ttl: 50 })
    await sleep(120)
    const next = await kitB.locks.acquire('job:6', { ttl: '5s' })
    expect(await lock.release()).toBe(false)
    expect(await kitA.locks.tryAcquire('job:6')).toBeNull()
    await next.release()
  })
})

describe('kit.locks.using', () => {
  it('extends the lease while the routine runs longer than the ttl and releases afterwards', async () => {
    const result = await kitA.locks.using(
      'report:daily',
      async (lock, signal) => {
        await sleep(500)
        expect(signal.aborted).toBe(false)
        expect(await kitB.locks.tryAcquire('report:daily')).toBeNull()
        return lock.fence
      },
      { ttl: 200 },
    )
    expect(typeof result).toBe('number')
    const after = await kitB.locks.tryAcquire('report:daily')
    expect(after?.fence).toBe(result + 1)
    await after?.release()
  })

  it('fires the signal when the lease is stolen mid-run and still returns the result', async () => {
    const key = kitA.keys.module('lock').tagged('steal', 'steal')
    const result = await kitA.locks.using(
      'steal',
      async (_lock, signal) => {
        await kitA.redis.set(key, 'someone-else', 'PX', 5000)
        await new Promise<void>((resolve) =>
          signal.addEventListener('abort', () => resolve(), { once: true }),
        )
        expect(signal.reason).toBeInstanceOf(LockLostError)
        return 'done anyway'
      },
      { ttl: 150 },
    )
    expect(result).toBe('done anyway')
    // The thief's value is untouched by our release.
    expect(await kitA.redis.get(key)).toBe('someone-else')
    await kitA.redis.del(key)
  })

  it('fires the signal when the lease runs out before it could be extended (a blocked event loop)', async () => {
    const lost: string[] = []
    const off = kitA.on('lock:lost', ({ resource }) => lost.push(resource))
    const aborted = await kitA.locks.using(
      'blocked-loop',
      async (lock, signal) => {
        // Blocks past the whole lease: the extension due at half of it cannot run in time.
        const until = Date.now() + 250
        while (Date.now() < until) {}
        await sleep(50)
        expect(lock.valid).toBe(false)
        expect(signal.reason).toBeInstanceOf(LockLostError)
        return signal.aborted
      },
      { ttl: 150 },
    )
    off()
    expect(aborted).toBe(true)
    expect(lost).toEqual(['blocked-loop'])
  })

  it("rethrows the routine's error, not the release failure, when the lease was stolen", async () => {
    const key = kitA.keys.module('lock').tagged('steal2', 'steal2')
    const boom = new Error('routine failed')
    const errors: unknown[] = []
    const off = kitA.on('error', ({ error }) => errors.push(error))
    const error = await kitA.locks
      .using(
        'steal2',
        async (_lock, signal) => {
          await kitA.redis.set(key, 'thief', 'PX', 5000)
          await new Promise((r) => signal.addEventListener('abort', r, { once: true }))
          throw boom
        },
        { ttl: 150 },
      )
      .catch((e: unknown) => e)
    expect(error).toBe(boom)
    off()
    await kitA.redis.del(key)
  })

  it("returns the routine's result when the release fails because Redis went away", async () => {
    const local = await startRedis()
    const kit = createRedkit({ redis: local.url, prefix, configFile: false, env: {}, commandTimeout: 300 })
    const errors: unknown[] = []
    kit.on('error', ({ error }) => errors.push(error))
    const result = await kit.locks.using('r', async () => {
      await local.server.kill()
      return 42
    })
    expect(result).toBe(42)
    expect(errors.length).toBeGreaterThan(0)
    await kit.close()
    await local.stop()
  })
})

describe('a server that stalls past the command timeout', () => {
  it('leaves no lock, once() claim or idempotency claim behind once it resumes', async () => {
    const local = await startRedis()
    const kit = createRedkit({ redis: local.url, prefix, configFile: false, env: {}, commandTimeout: 200 })
    try {
      // Scripts loaded first: on a server that does not know them yet, the stalled EVALSHA would
      // only answer NOSCRIPT and change nothing.
      await (await kit.locks.acquire('warm-up')).release()
      await kit.locks.once('warm-up-job', async () => 'ran')
      await new IdempotencyStore(kit).begin('POST /pay', 'warm-up', 'fp', 1000)
      local.server.pause()
      // Each call gives up after the command timeout, but its command is already on the socket:
      // the server runs it when it resumes, for a token that nobody holds any more.
      const failures = await Promise.all([
        kit.locks.tryAcquire('stalled', { ttl: '10s' }).catch((e: unknown) => e),
        kit.locks.once('stalled-job', async () => 'ran', { lease: '10s' }).catch((e: unknown) => e),
        new IdempotencyStore(kit).begin('POST /pay', 'key-1', 'fp', 10_000).catch((e: unknown) => e),
      ])
      expect(failures[0]).toBeInstanceOf(LockUnavailableError)
      expect(failures[1]).toBeInstanceOf(LockUnavailableError)
      expect(failures[2]).toBeInstanceOf(ConnectionError)
      await sleep(300)
      local.server.resume()
      await kit.redis.ping()
      const left = (await kit.redis.keys(`${prefix}:*stalled*`)).filter((key) => !key.endsWith(':fence'))
      const claims = await kit.redis.keys(`${prefix}:idempotency:*key-1*`)
      expect([...left, ...claims]).toEqual([])
      const lock = await kit.locks.tryAcquire('stalled')
      expect(lock).not.toBeNull()
      await lock?.release()
      expect(await kit.locks.once('stalled-job', async () => 'ran', { wait: 100 })).toBe('ran')
    } finally {
      local.server.resume()
      await kit.close()
      await local.stop()
    }
  })

  it('sends an undo only for an acquisition that went out, not for one the open circuit refused', async () => {
    const local = await startRedis()
    const kit = createRedkit({ redis: local.url, prefix, configFile: false, env: {}, commandTimeout: 200 })
    try {
      await (await kit.locks.acquire('warm-up')).release()
      const evals = async () =>
        Number(/cmdstat_eval:calls=(\d+)/.exec(await kit.redis.info('commandstats'))?.[1] ?? 0)
      const before = await evals()
      local.server.pause()
      // Five acquisitions go out and time out: the circuit opens (threshold 5), each one is undone.
      const sent = await Promise.all(
        Array.from({ length: 5 }, (_, i) => kit.locks.tryAcquire(`sent-${i}`).catch((e: unknown) => e)),
      )
      // These are refused before anything is sent: nothing to undo.
      const refused = await Promise.all(
        Array.from({ length: 5 }, (_, i) => kit.locks.tryAcquire(`refused-${i}`).catch((e: unknown) => e)),
      )
      for (const error of [...sent, ...refused]) expect(error).toBeInstanceOf(LockUnavailableError)
      local.server.resume()
      await kit.redis.ping()
      expect((await evals()) - before).toBe(5)
      expect(await kit.redis.keys(`${prefix}:lock:*`)).not.toContainEqual(
        expect.stringMatching(/sent-\d}:sent-\d$/),
      )
    } finally {
      local.server.resume()
      await kit.close()
      await local.stop()
    }
  })
})

describe('mutual exclusion across kits', () => {
  it('has no lost updates where the fence is checked, with leases expiring mid-work; fences strictly increase', async () => {
    const store = kitA.keys.module('ledger')
    const value = store.key('value')
    const maxFence = store.key('max-fence')
    // The protected resource: every read and write carries the fence and is refused when an
    // equal-or-newer holder has already been seen (reads register their fence).
    const fencedRead = new LuaScript(`
      local max = tonumber(redis.call('GET', KEYS[2]) or '0')
      if tonumber(ARGV[1]) < max then return -1 end
      redis.call('SET', KEYS[2], ARGV[1])
      return tonumber(redis.call('GET', KEYS[1]) or '0')`)
    const fencedWrite = new LuaScript(`
      local max = tonumber(redis.call('GET', KEYS[2]) or '0')
      if tonumber(ARGV[1]) < max then return 0 end
      redis.call('SET', KEYS[2], ARGV[1])
      redis.call('SET', KEYS[1], ARGV[2])
      return 1`)
    const ttl = 120
    const fences: number[] = []
    const perWorker: number[][] = [[], [], [], [], [], []]
    let committed = 0
    let refused = 0
    let expiredMidWork = 0
    const worker = async (kit: Redkit, id: number) => {
      for (let i = 0; i < 6; i++) {
        const lock = await kit.locks.acquire('ledger', {
          ttl,
          retry: { attempts: 200, delay: 20, jitter: 10 },
        })
        fences.push(lock.fence)
        perWorker[id]!.push(lock.fence)
        const seen = Number(await kit.hub.exec((r) => fencedRead.run(r, [value, maxFence], [lock.fence])))
        // Some iterations outlive their lease, so another worker gets the lock meanwhile.
        await sleep(i === id % 3 ? ttl * 2 : Math.random() * 20)
        if (!lock.valid) expiredMidWork++
        if (seen >= 0) {
          const ok = await kit.hub.exec((r) => fencedWrite.run(r, [value, maxFence], [lock.fence, seen + 1]))
          if (ok === 1) committed++
          else refused++
        } else refused++
        await lock.release()
      }
    }
    await Promise.all([0, 1, 2, 3, 4, 5].map((id) => worker(id % 2 === 0 ? kitA : kitB, id)))
    expect(Number(await kitA.redis.get(value))).toBe(committed)
    expect(expiredMidWork).toBeGreaterThan(0)
    expect(committed + refused).toBe(36)
    expect(new Set(fences).size).toBe(fences.length)
    // A worker's acquisitions follow each other in time, so its fences must strictly increase.
    for (const list of perWorker) {
      expect(list).toHaveLength(6)
      for (let i = 1; i < list.length; i++) expect(list[i]!).toBeGreaterThan(list[i - 1]!)
    }
  }, 60_000)
})

describe('kit.locks.once', () => {
  it('runs a job once across kits and hands every caller the stored result', async () => {
    let runs = 0
    const job = async () => {
      runs++
      await sleep(150)
      return { receipt: 'r-1', at: 7 }
    }
    const results = await Promise.all([
      kitA.locks.once('invoice:1', job),
      kitB.locks.once('invoice:1', job),
      kitA.locks.once('invoice:1', job),
      kitB.locks.once('invoice:1', job),
    ])
    expect(runs).toBe(1)
    expect(results).toEqual(Array(4).fill({ receipt: 'r-1', at: 7 }))
    expect(await kitB.locks.once('invoice:1', job)).toEqual({ receipt: 'r-1', at: 7 })
    expect(runs).toBe(1)
  })

  it('stores nothing when the job throws, so a later call runs it again', async () => {
    let runs = 0
    await expect(
      kitA.locks.once('invoice:2', async () => {
        runs++
        throw new Error('smtp down')
      }),
    ).rejects.toThrow('smtp down')
    expect(await kitB.locks.once('invoice:2', async () => ++runs)).toBe(2)
  })

  it('a result that cannot be stored as JSON rejects with CodecError and leaves the key free', async () => {
    let runs = 0
    const error = await kitA.locks
      .once('invoice:bigint', async () => {
        runs++
        return 10n
      })
      .catch((e: unknown) => e)
    expect(error).toBeInstanceOf(CodecError)
    expect((error as CodecError).message).toMatch(/once\(invoice:bigint\).*runs the job again/)
    expect(await kitA.redis.exists(kitA.keys.module('once').key('invoice:bigint'))).toBe(0)
    // Not left claimed: the next caller runs at once instead of waiting out a lease.
    expect(await kitB.locks.once('invoice:bigint', async () => ++runs, { wait: 100 })).toBe(2)
  })

  it('a caller that cannot wait for a running job gets LockBusyError', async () => {
    const running = kitA.locks.once('invoice:3', async () => {
      await sleep(400)
      return 'ok'
    })
    await sleep(30)
    await expect(kitB.locks.once('invoice:3', async () => 'dup', { wait: 100 })).rejects.toBeInstanceOf(
      LockBusyError,
    )
    expect(await running).toBe('ok')
  })
})
