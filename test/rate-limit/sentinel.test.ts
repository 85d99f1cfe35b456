import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createRedkit, type Redkit } from '../../src/index.js'
import { type SentinelGroup, startSentinelGroup, uniquePrefix } from '../helpers/index.js'

let group: SentinelGroup
const kits: Redkit[] = []
const prefix = uniquePrefix('rl-sentinel')

function kit(): Redkit {
  const k = createRedkit({
    redis: { sentinels: group.sentinelAddresses, name: group.name },
    prefix,
    commandTimeout: 5000,
    configFile: false,
    env: {},
  })
  kits.push(k)
  return k
}

beforeAll(async () => {
  group = await startSentinelGroup()
})

afterAll(async () => {
  await Promise.all(kits.map((k) => k.close()))
  await group?.stop()
})

describe('rate limiter through Sentinel', () => {
  it('allows exactly 100 of 1000 concurrent consumes from three kits and keeps both limits consistent', async () => {
    const three = [kit(), kit(), kit()]
    const options = {
      name: 'sentinel',
      limits: [
        { name: 'minute', points: 100, duration: '1m' },
        { name: 'hour', points: 150, duration: '1h' },
      ],
    }
    const results = await Promise.all(
      Array.from({ length: 1000 }, (_, i) => three[i % 3]!.rateLimits.consume('shared', options)),
    )
    expect(results.filter((r) => r.allowed)).toHaveLength(100)
    expect(results.every((r) => r.source === 'redis')).toBe(true)
    const state = await three[2]!.rateLimits.get('shared', options)
    expect(state.limits.map((l) => l.remaining)).toEqual([0, 50])
  })

  it('keeps counting on the new master after a failover', async () => {
    const k = kit()
    k.on('error', () => undefined)
    const options = { name: 'failover', limits: [{ points: 10, duration: '1m' }] }
    expect((await k.rateLimits.consume('f', options)).allowed).toBe(true)
    // Let the replica catch up before the master dies, so the count survives the failover.
    await k.redis.call('WAIT', 1, 1000)
    const oldPort = await group.masterPort()
    await group.master.kill()
    const deadline = Date.now() + 30_000
    let result = await k.rateLimits.consume('f', options)
    while ((result.source !== 'redis' || (await group.masterPort()) === oldPort) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 200))
      result = await k.rateLimits.consume('f', options)
    }
    if (result.source !== 'redis') {
      throw new Error(
        `still answering from memory 30 s after the kill: kit ${k.redis.status}, ${await group.describe()}`,
      )
    }
    expect(result.source).toBe('redis')
    expect(await group.masterPort()).not.toBe(oldPort)
    // 1 before the failover + the last one (memory-mode answers in between never reached Redis).
    expect(result.limits[0]?.remaining).toBeLessThanOrEqual(8)
    expect(result.allowed).toBe(true)
  }, 45_000)
})
