import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  createLocks,
  createRedkit,
  LockBusyError,
  type Locks,
  LockUnavailableError,
  type Redkit,
} from '../../src/index.js'
import { type StandaloneRedis, startRedis, uniquePrefix } from '../helpers/redis-server.js'

const prefix = uniquePrefix('quorum')
let kitRedis: StandaloneRedis
let masters: StandaloneRedis[]
let kit: Redkit
let locks: Locks
let other: Locks

beforeAll(async () => {
  kitRedis = await startRedis()
  masters = await Promise.all([startRedis(), startRedis(), startRedis()])
  kit = createRedkit({ redis: kitRedis.url, prefix, configFile: false, env: {}, commandTimeout: 500 })
  locks = createLocks(kit, { servers: masters.map((m) => m.url) })
  other = createLocks(kit, { servers: masters.map((m) => m.url) })
})
afterAll(async () => {
  await kit?.close()
  await Promise.all([kitRedis, ...(masters ?? [])].map((s) => s?.stop()))
})

function fenceKey(resource: string): string {
  return kit.keys.module('lock').tagged(resource, resource, 'fence')
}

describe('Redlock quorum over three independent masters', () => {
  it('grants a lease held on every master and refuses a second holder', async () => {
    expect(locks.servers).toBe(3)
    const lock = await locks.acquire('q:1', { ttl: '5s' })
    for (const m of masters) {
      const client = new Redis(m.url)
      expect(await client.get(kit.keys.module('lock').tagged('q:1', 'q:1'))).toBe(lock.token)
      await client.quit()
    }
    expect(await other.tryAcquire('q:1')).toBeNull()
    await lock.release()
    const next = await other.tryAcquire('q:1')
    expect(next?.fence).toBeGreaterThan(lock.fence)
    await next?.release()
  })

  it('takes the largest counter of the quorum and writes it back, so fences keep increasing when servers change', async () => {
    // Two masters are far ahead, as after a fence of 100 was handed out: every fence handed out was
    // first written back to a majority, so any quorum of a later grant holds it. (One master alone
    // may be left out of the quorum that answers first.)
    for (const master of masters.slice(0, 2)) {
      const ahead = new Redis(master!.url)
      await ahead.set(fenceKey('q:2'), '100')
      await ahead.quit()
    }
    const first = await locks.acquire('q:2')
    expect(first.fence).toBe(101)
    await first.release()
    // Without the master that was ahead, the remaining majority still issues larger fences.
    await masters[0]!.server.kill()
    const second = await locks.acquire('q:2')
    expect(second.fence).toBeGreaterThan(101)
    await second.release()
    await masters[0]!.server.start()
    await new Promise((r) => setTimeout(r, 1500))
  })

  it('still grants with 2 of 3 masters after one is killed, and a busy resource stays busy', async () => {
    await masters[1]!.server.kill()
    const started = Date.now()
    const lock = await locks.acquire('q:3', { ttl: '5s' })
    expect(Date.now() - started).toBeLessThan(3000)
    expect(lock.valid).toBe(true)
    const error = await other.acquire('q:3', { retry: { attempts: 1, delay: 20 } }).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(LockBusyError)
    const extended = await locks.extend(lock, '10s')
    expect(extended.remainingMs).toBeGreaterThan(5000)
    expect(await locks.release(lock)).toBe(true)
    const again = await other.acquire('q:3')
    expect(again.fence).toBeGreaterThan(lock.fence)
    await again.release()
    await masters[1]!.server.start()
    await new Promise((r) => setTimeout(r, 1500))
  })

  it('fails closed with LockUnavailableError when a majority is down', async () => {
    await masters[1]!.server.kill()
    await masters[2]!.server.kill()
    const started = Date.now()
    const error = await locks.acquire('q:4').catch((e: unknown) => e)
    expect(error).toBeInstanceOf(LockUnavailableError)
    expect((error as LockUnavailableError).code).toBe('E_LOCK_UNAVAILABLE')
    expect((error as LockUnavailableError).resource).toBe('q:4')
    expect((error as LockUnavailableError).attempts).toBe(1)
    expect(Date.now() - started).toBeLessThan(3000)
    await masters[1]!.server.start()
    await masters[2]!.server.start()
    // Let the lock clients' capped reconnect backoff find them again.
    await new Promise((r) => setTimeout(r, 1500))
  })

  it('using() runs under the quorum lease and releases it', async () => {
    const fence = await locks.using('q:5', async (lock) => {
      expect(await other.tryAcquire('q:5')).toBeNull()
      return lock.fence
    })
    const after = await other.tryAcquire('q:5')
    expect(after?.fence).toBe(fence + 1)
    await after?.release()
  })
})
