import type { Cluster } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ConnectionError, createRedkit, LuaScript, type Redkit } from '../../src/index.js'
import { type RedisClusterGroup, startCluster, uniquePrefix } from '../helpers/redis-server.js'

const prefix = uniquePrefix('cluster')
let cluster: RedisClusterGroup
let kit: Redkit

beforeAll(async () => {
  cluster = await startCluster()
  kit = createRedkit({ redis: { cluster: cluster.addresses }, prefix, configFile: false, env: {} })
})
afterAll(async () => {
  await kit?.close()
  await cluster?.stop()
})

describe('kit on a 3-master Cluster', () => {
  it('runs the same kit code with keys spread over slots on every master', async () => {
    const keys = kit.keys.module('app')
    const names = Array.from({ length: 30 }, (_, i) => keys.key('item', i))
    await Promise.all(names.map((k, i) => kit.hub.exec((r) => r.set(k, String(i)))))
    const values = await Promise.all(names.map((k) => kit.hub.exec((r) => r.get(k))))
    expect(values).toEqual(names.map((_, i) => String(i)))
    const client = kit.redis as Cluster
    const owners = new Set(names.map((k) => keySlotOwner(client, k)))
    expect(owners.size).toBe(3) // the keys really live on all three masters
  })

  it('keeps tagged keys in one slot so one script can touch them together', async () => {
    const keys = kit.keys.module('app')
    const a = keys.tagged('order:42', 'count')
    const b = keys.tagged('order:42', 'log')
    const script = new LuaScript(
      `redis.call('INCR', KEYS[1]); redis.call('RPUSH', KEYS[2], ARGV[1]); return redis.call('LLEN', KEYS[2])`,
    )
    expect(await kit.hub.exec((r) => script.run(r, [a, b], ['x']))).toBe(1)
    expect(await kit.hub.exec((r) => script.run(r, [a, b], ['y']))).toBe(2)
    expect(await kit.redis.get(a)).toBe('2')
    // Untagged keys of different slots are refused by Redis for one script: the reason for tags.
    const spread = [keys.key('x1'), keys.key('x2'), keys.key('x3'), keys.key('x4')]
    await expect(kit.hub.exec((r) => script.run(r, spread.slice(0, 2), ['z']))).rejects.toThrow(
      /CROSSSLOT|slot/i,
    )
  })

  it('scans every master for keys', async () => {
    const keys = kit.keys.module('scan')
    await Promise.all(Array.from({ length: 300 }, (_, i) => kit.hub.exec((r) => r.set(keys.key(i), '1'))))
    const seen = new Set<string>()
    await kit.hub.scan(keys.pattern(), (batch) => {
      for (const k of batch) seen.add(k)
    })
    expect(seen.size).toBe(300)
  })

  it('reports cluster health', async () => {
    expect(await kit.health()).toMatchObject({ status: 'ok', kind: 'cluster', role: 'cluster', masters: 3 })
  })

  it('delivers pub/sub on a dedicated subscriber connection', async () => {
    const got: string[] = []
    await kit.hub.subscribe(kit.keys.module('bus').key('c'), (m) => got.push(m))
    await kit.redis.publish(kit.keys.module('bus').key('c'), 'hello')
    const deadline = Date.now() + 3000
    while (got.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20))
    expect(got).toEqual(['hello'])
  })

  it('fails fast with ConnectionError when every node is down', async () => {
    const own = await startCluster()
    const k = createRedkit({
      redis: { cluster: own.addresses },
      prefix,
      configFile: false,
      env: {},
      commandTimeout: 500,
    })
    await k.redis.set(k.keys.module('app').key('x'), '1')
    await Promise.all(own.nodes.map((n) => n.kill('SIGKILL')))
    const started = Date.now()
    const error = await k.hub.exec((r) => r.get(k.keys.module('app').key('x'))).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(ConnectionError)
    expect(Date.now() - started).toBeLessThan(3000)
    await k.close()
    await own.stop()
  })
})

function keySlotOwner(client: Cluster, key: string): string {
  const slot = clusterKeySlot(key)
  return String(client.slots[slot]?.[0])
}

// CRC16/XMODEM as Redis Cluster uses it, honouring hash tags.
function clusterKeySlot(key: string): number {
  const open = key.indexOf('{')
  if (open >= 0) {
    const close = key.indexOf('}', open + 1)
    if (close > open + 1) key = key.slice(open + 1, close)
  }
  let crc = 0
  for (const byte of Buffer.from(key)) {
    crc ^= byte << 8
    for (let i = 0; i < 8; i++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff
  }
  return crc % 16384
}
