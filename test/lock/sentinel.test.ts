import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createRedkit, LockUnavailableError, type Redkit } from '../../src/index.js'
import { type SentinelGroup, startSentinelGroup, uniquePrefix } from '../helpers/redis-server.js'

const prefix = uniquePrefix('locksentinel')
let group: SentinelGroup
let kit: Redkit

beforeAll(async () => {
  group = await startSentinelGroup('lockmaster')
  kit = createRedkit({
    redis: { sentinels: group.sentinelAddresses, name: group.name },
    prefix,
    configFile: false,
    env: {},
  })
})
afterAll(async () => {
  await kit?.close()
  await group?.stop()
})

describe('locks through Sentinel', () => {
  it('locks on the master the sentinels name, with increasing fences', async () => {
    const first = await kit.locks.acquire('s:1', { ttl: '5s' })
    expect(await kit.locks.tryAcquire('s:1')).toBeNull()
    await first.release()
    const second = await kit.locks.using('s:1', async (lock) => lock.fence)
    expect(second).toBe(first.fence + 1)
  })

  it('fails closed while no master answers, and locks again after the failover', async () => {
    const before = await kit.locks.using('s:2', async (lock) => lock.fence)
    // Replication is asynchronous (the documented caveat): make sure the replica has the counter.
    await kit.redis.call('WAIT', 1, 2000)
    await group.master.kill()
    const error = await kit.locks.acquire('s:2').catch((e: unknown) => e)
    expect(error).toBeInstanceOf(LockUnavailableError)
    // The replica is promoted; the kit follows it and locks are granted again.
    const deadline = Date.now() + 30_000
    let fence: number | undefined
    while (fence === undefined && Date.now() < deadline) {
      fence = await kit.locks.using('s:2', async (lock) => lock.fence).catch(() => undefined)
      if (fence === undefined) await new Promise((r) => setTimeout(r, 200))
    }
    expect(fence).toBeGreaterThan(before)
  }, 45_000)
})
