import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createRedkit, type Redkit, type RedkitEventMap } from '../../src/index.js'
import { rawCommand, type SentinelGroup, startSentinelGroup, uniquePrefix } from '../helpers/redis-server.js'

const prefix = uniquePrefix('sentinel')
let group: SentinelGroup
let kit: Redkit

beforeAll(async () => {
  group = await startSentinelGroup()
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

interface WriteLog {
  /** When the write was issued (a reply in flight at the kill must not count as recovery). */
  issued: number
  /** When it settled. */
  at: number
  ok: boolean
}

/** Writes through the kit every `everyMs` until `stop()`; records each outcome with its time. */
function writeLoop(k: Redkit, key: string, everyMs = 10): { log: WriteLog[]; stop: () => Promise<void> } {
  const log: WriteLog[] = []
  let running = true
  const done = (async () => {
    while (running) {
      const issued = performance.now()
      const ok = await k.hub
        .exec((r) => r.incr(key))
        .then(
          () => true,
          () => false,
        )
      log.push({ issued, at: performance.now(), ok })
      await new Promise((r) => setTimeout(r, everyMs))
    }
  })()
  return {
    log,
    stop: async () => {
      running = false
      await done
    },
  }
}

async function waitUntil(check: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

async function waitUntilAsync(check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    if (await check().catch(() => false)) return
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`)
    await new Promise((r) => setTimeout(r, 100))
  }
}

/** Plain subscribers on every sentinel: the first `+switch-master` any of them announces. */
async function watchSwitch(): Promise<{ readonly switchedAt: number; close: () => void }> {
  let switchedAt = 0
  const clients = group.sentinels.map((s) => new Redis({ host: '127.0.0.1', port: s.port }))
  for (const client of clients) {
    client.on('message', (channel: string) => {
      if (channel === '+switch-master' && switchedAt === 0) switchedAt = performance.now()
    })
    await client.subscribe('+switch-master')
  }
  return {
    get switchedAt() {
      return switchedAt
    },
    close: () => {
      for (const client of clients) client.disconnect()
    },
  }
}

describe('kit through Redis Sentinel', () => {
  it('talks to the master the sentinels name and reports it in health', async () => {
    const key = kit.keys.module('app').key('hello')
    await kit.hub.exec((r) => r.set(key, 'world'))
    expect(await kit.redis.get(key)).toBe('world')
    const health = await kit.health()
    expect(health).toMatchObject({
      status: 'ok',
      kind: 'sentinel',
      role: 'master',
      master: { port: group.master.port },
    })
  })

  it('keeps writing through a SIGKILL of the master: writes resume on the promoted replica without a restart', async () => {
    const failovers: RedkitEventMap['failover'][] = []
    kit.on('failover', (e) => failovers.push(e))
    const key = kit.keys.module('app').key('failover-counter')
    const loop = writeLoop(kit, key)
    await waitUntil(() => loop.log.filter((w) => w.ok).length >= 20, 10_000)

    const watcher = await watchSwitch()

    const killedAt = performance.now()
    await group.master.kill('SIGKILL')
    await waitUntil(() => loop.log.some((w) => w.issued > killedAt && w.ok), 60_000).catch(
      async (error: Error) => {
        // Tell a kit that did not recover from sentinels that did not fail over.
        await loop.stop()
        watcher.close()
        const recent = loop.log.slice(-3).map((w) => `${Math.round(w.at - w.issued)}ms ${w.ok}`)
        throw new Error(
          `${error.message}: switched=${watcher.switchedAt > 0} masterPort=${await group.masterPort()} ` +
            `connection=${kit.redis.status} breaker=${kit.hub.breakerState} last writes=${recent.join(', ')}`,
        )
      },
    )
    const firstOk = loop.log.find((w) => w.issued > killedAt && w.ok)!
    const failedWrites = loop.log.filter((w) => w.issued > killedAt && !w.ok).length
    await waitUntil(() => loop.log.filter((w) => w.issued > firstOk.at && w.ok).length >= 20, 10_000)
    await loop.stop()

    watcher.close()

    const stallMs = Math.round(firstOk.at - killedAt)
    const afterSwitchMs = watcher.switchedAt ? Math.round(firstOk.at - watcher.switchedAt) : Number.NaN
    console.log(
      `[sentinel failover] stall from SIGKILL of the master to the first successful write: ${stallMs} ms; ` +
        `${afterSwitchMs} ms after the sentinels announced +switch-master ` +
        `(${failedWrites} writes failed with ConnectionError in between; down-after 1000 ms, quorum 2)`,
    )
    // Generous bound: detection (1 s down-after) + election + promotion on a busy 2-core machine.
    expect(stallMs).toBeLessThan(30_000)

    expect(await group.masterPort()).toBe(group.replica.port)
    const health = await kit.health()
    expect(health).toMatchObject({ status: 'ok', role: 'master', master: { port: group.replica.port } })
    expect(failovers.at(-1)).toMatchObject({
      from: { port: group.master.port },
      to: { port: group.replica.port },
    })
    // Every write after the first success went to the new master, which accepts writes.
    expect(loop.log.filter((w) => w.issued > firstOk.at).every((w) => w.ok)).toBe(true)
    expect(
      Number(await rawCommand(group.replica.port, `GET ${key}`).then((r) => r.split('\r\n')[1])),
    ).toBeGreaterThan(0)
  }, 90_000)

  it('moves to the new master at once when the master hangs instead of dying', async () => {
    // The killed master comes back; the sentinels turn it into a replica of the new master.
    await group.master.start()
    await waitUntilAsync(
      async () => (await rawCommand(group.master.port, 'INFO replication')).includes('master_link_status:up'),
      30_000,
    )
    await waitUntilAsync(async () => {
      const reply = await rawCommand(group.sentinels[0]!.port, `SENTINEL replicas ${group.name}`)
      return reply.includes(String(group.master.port)) && !/s_down|disconnected/.test(reply)
    }, 30_000)

    const watcher = await watchSwitch()
    const key = kit.keys.module('app').key('hang-counter')
    const loop = writeLoop(kit, key)
    await waitUntil(() => loop.log.filter((w) => w.ok).length >= 20, 10_000)

    const pausedAt = performance.now()
    group.replica.pause() // the current master: its sockets stay open, it answers nothing
    try {
      await waitUntil(
        () => watcher.switchedAt > 0 && loop.log.some((w) => w.issued > watcher.switchedAt && w.ok),
        60_000,
      )
    } finally {
      await loop.stop()
      watcher.close()
    }
    const firstOk = loop.log.find((w) => w.issued > watcher.switchedAt && w.ok)!
    const afterSwitchMs = Math.round(firstOk.at - watcher.switchedAt)
    console.log(
      `[sentinel failover, hung master] first successful write ${Math.round(firstOk.at - pausedAt)} ms after SIGSTOP, ` +
        `${afterSwitchMs} ms after +switch-master (failover detector on)`,
    )
    // Without the failover detector the client waits for the hung socket to time out (seconds).
    expect(afterSwitchMs).toBeLessThan(3000)
    expect(await group.masterPort()).toBe(group.master.port)
    group.replica.resume()
  }, 90_000)

  it('closes every connection, sentinel ones included, so the process can exit', async () => {
    const own = createRedkit({
      redis: { sentinels: group.sentinelAddresses, name: group.name },
      prefix,
      configFile: false,
      env: {},
    })
    await own.redis.ping()
    own.hub.dedicated('subscriber')
    const handlesBefore = process.getActiveResourcesInfo().filter((r) => r === 'TCPSocketWrap').length
    await own.close()
    await new Promise((r) => setTimeout(r, 100))
    const handlesAfter = process.getActiveResourcesInfo().filter((r) => r === 'TCPSocketWrap').length
    // The kit held at least: command connection, subscriber, failover-detector sentinel sockets.
    expect(handlesBefore - handlesAfter).toBeGreaterThanOrEqual(3)
  })
})
