import { connect, createServer } from 'node:net'
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  ConnectionError,
  createRedkit,
  isConnectionError,
  LuaScript,
  type Redkit,
  type RedkitEventMap,
  RedkitEvents,
} from '../../src/index.js'
import { freePort, type StandaloneRedis, startRedis, uniquePrefix } from '../helpers/redis-server.js'

const prefix = uniquePrefix('standalone')
let redis: StandaloneRedis

function kitFor(extra: Parameters<typeof createRedkit>[0] = {}): Redkit {
  return createRedkit({ redis: redis.url, prefix, configFile: false, env: {}, ...extra })
}

/** A server of the test's own (to kill and restart) and a kit on it. */
async function ownServer(
  extra: Parameters<typeof createRedkit>[0],
): Promise<{ own: StandaloneRedis; kit: Redkit }> {
  const own = await startRedis()
  return { own, kit: createRedkit({ redis: own.url, prefix, configFile: false, env: {}, ...extra }) }
}

async function until<T>(fn: () => Promise<T>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    try {
      return await fn()
    } catch (error) {
      if (Date.now() > deadline) throw error
      await new Promise((r) => setTimeout(r, 50))
    }
  }
}

beforeAll(async () => {
  redis = await startRedis()
})
afterAll(async () => {
  await redis.stop()
})

describe('kit on a standalone server', () => {
  it('shares one command client for modules and the app, with keys under the prefix', async () => {
    const kit = kitFor()
    const key = kit.keys.module('app').key('greeting')
    expect(key).toBe(`${prefix}:app:greeting`)
    await kit.redis.set(key, 'hello')
    expect(await kit.hub.exec((r) => r.get(key))).toBe('hello')
    expect(kit.redis).toBe(kit.hub.client)
    await kit.close()
  })

  it('connects again when its client ends while the kit is open, and not after close', async () => {
    const kit = kitFor()
    await kit.hub.exec((r) => r.ping())
    // What ioredis does to a Sentinel client whose master lookup a failover notice interrupts.
    kit.redis.disconnect()
    await new Promise((r) => setTimeout(r, 20))
    expect(kit.redis.status).toBe('end')
    const deadline = Date.now() + 5000
    while (kit.redis.status !== 'ready' && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20))
    expect(await kit.hub.exec((r) => r.ping())).toBe('PONG')
    await kit.close()
    await new Promise((r) => setTimeout(r, 300))
    expect(kit.redis.status).toBe('end')
  })

  it('reports health: connected, role, latency, master address', async () => {
    const kit = kitFor()
    const health = await kit.health()
    expect(health).toMatchObject({
      status: 'ok',
      kind: 'standalone',
      connection: 'ready',
      role: 'master',
      master: { host: '127.0.0.1', port: redis.port },
      breaker: 'closed',
    })
    expect(health.latencyMs).toBeGreaterThan(0)
    await kit.close()
  })

  it('passes reply errors through unchanged and keeps the breaker closed', async () => {
    const kit = kitFor({ breaker: { threshold: 1 } })
    const key = kit.keys.module('app').key('not-a-list')
    await kit.redis.set(key, 'x')
    const error = await kit.hub.exec((r) => r.lpush(key, 'y')).catch((e: unknown) => e)
    expect(error).not.toBeInstanceOf(ConnectionError)
    expect((error as Error).message).toMatch(/WRONGTYPE/)
    expect(kit.hub.breakerState).toBe('closed')
    await kit.close()
  })

  it('creates dedicated connections lazily, reuses them and delivers pub/sub messages', async () => {
    const kit = kitFor()
    const clients = await kit.redis.client('LIST')
    const before = String(clients).split('\n').filter(Boolean).length
    const sub = kit.hub.dedicated('subscriber')
    expect(kit.hub.dedicated('subscriber')).toBe(sub)
    const channel = kit.keys.module('bus').key('test')
    const received: string[] = []
    const unsubscribe = await kit.hub.subscribe(channel, (message) => received.push(message))
    const second: string[] = []
    await kit.hub.subscribe(channel, (message) => second.push(message))
    await kit.redis.publish(channel, 'one')
    await until(async () => {
      if (received.length === 0 || second.length === 0) throw new Error('not yet')
    }, 3000)
    expect(received).toEqual(['one'])
    expect(second).toEqual(['one'])
    await unsubscribe()
    await kit.redis.publish(channel, 'two')
    await until(async () => {
      if (second.length < 2) throw new Error('not yet')
    }, 3000)
    expect(received).toEqual(['one'])
    const after = String(await kit.redis.client('LIST'))
      .split('\n')
      .filter(Boolean).length
    expect(after).toBe(before + 1)
    await kit.close()
  })

  it('reports a failed SUBSCRIBE as ConnectionError and tries again on the next call', async () => {
    const { own, kit } = await ownServer({ commandTimeout: 300 })
    await kit.redis.ping()
    await own.server.kill()
    const channel = kit.keys.module('bus').key('retry')
    await expect(kit.hub.subscribe(channel, () => undefined)).rejects.toBeInstanceOf(ConnectionError)
    await own.server.start()
    const got: string[] = []
    await until(() => kit.hub.subscribe(channel, (m) => got.push(m)), 10_000)
    await until(async () => {
      await kit.redis.publish(channel, 'back')
      if (got.length === 0) throw new Error('not yet')
    }, 5000)
    expect(got[0]).toBe('back')
    await kit.close()
    await own.stop()
  })

  it('delivers each message once to a channel subscribed again after every handler left', async () => {
    const kit = kitFor()
    const other = kit.keys.module('bus').key('other')
    const third: string[] = []
    const off = await kit.hub.subscribe(other, (m) => third.push(m))
    await off()
    await kit.hub.subscribe(other, (m) => third.push(m))
    await kit.redis.publish(other, 'once')
    await until(async () => {
      if (third.length === 0) throw new Error('not yet')
    }, 3000)
    await new Promise((r) => setTimeout(r, 50))
    expect(third).toEqual(['once'])
    await kit.close()
  })

  it('close() waits for in-flight commands, closes what it owns and is safe to call twice', async () => {
    const kit = kitFor()
    const key = kit.keys.module('app').key('counter')
    const writes = Array.from({ length: 200 }, () => kit.redis.incr(key))
    const closing = kit.close()
    const results = await Promise.all(writes)
    await closing
    await kit.close()
    expect(results.at(-1)).toBe(200)
    expect(kit.redis.status).toBe('end')
    await expect(kit.hub.exec((r) => r.get(key))).rejects.toBeInstanceOf(ConnectionError)
    const check = new Redis(redis.url)
    expect(await check.get(key)).toBe('200')
    await check.quit()
  })

  it('lets close hooks run their commands, even after an await, then refuses new ones', async () => {
    const kit = kitFor()
    const key = kit.keys.module('app').key('flushed')
    const seen: string[] = []
    kit.hub.onClose(async () => {
      await new Promise((r) => setTimeout(r, 20))
      await kit.hub.exec((r) => r.set(key, 'first hook'))
    })
    kit.hub.onClose(async () => {
      seen.push(String(await kit.hub.exec((r) => r.get(key))))
    })
    await kit.close()
    expect(seen).toEqual(['first hook'])
    await expect(kit.hub.exec((r) => r.get(key))).rejects.toBeInstanceOf(ConnectionError)
    const check = new Redis(redis.url)
    expect(await check.get(key)).toBe('first hook')
    await check.quit()
  })

  it('closes a subscriber caught between connecting and ready without an unhandled rejection', async () => {
    // A proxy that can hold back the answer to a connection's ready check (INFO): the window in
    // which close() found the subscriber reconnecting, and ioredis then subscribed again on ready,
    // on a closing connection, a rejection nobody could catch.
    const own = await startRedis()
    let holdNext = false
    let release = () => {}
    const proxy = createServer({ allowHalfOpen: true }, (client) => {
      const server = connect(own.port, '127.0.0.1')
      const hold = holdNext
      holdNext = false
      let holding = false
      const held: Buffer[] = []
      client.on('data', (chunk: Buffer) => {
        // The ready check is a bare INFO (the handshake before it has CLIENT SETINFO).
        if (hold && chunk.includes('*1\r\n$4\r\ninfo\r\n')) holding = true
        server.write(chunk)
      })
      server.on('data', (chunk: Buffer) => (holding ? held.push(chunk) : client.write(chunk)))
      if (hold) {
        release = () => {
          for (const chunk of held) client.write(chunk)
          client.end()
          server.end()
        }
      } else {
        client.on('end', () => server.end())
        server.on('end', () => client.end())
      }
      client.on('error', () => server.destroy())
      server.on('error', () => client.destroy())
    })
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r))
    const port = (proxy.address() as { port: number }).port
    const kit = createRedkit({ redis: `redis://127.0.0.1:${port}`, prefix, configFile: false, env: {} })
    const rejections: unknown[] = []
    const onRejection = (reason: unknown) => rejections.push(reason)
    process.on('unhandledRejection', onRejection)
    try {
      await kit.hub.subscribe('closing', () => undefined)
      const sub = kit.hub.dedicated('subscriber') as unknown as {
        status: string
        stream: { destroy(): void }
        once(event: 'ready', listener: () => void): void
        commandQueue: { toArray(): Array<{ command: { name: string } }> }
      }
      holdNext = true
      sub.stream.destroy()
      await until(async () => {
        if (sub.status !== 'connect' || !sub.commandQueue.toArray().some((c) => c.command.name === 'info'))
          throw new Error(`subscriber ${sub.status}, no ready check pending yet`)
      }, 5000)
      const closing = kit.close()
      let readyAfterClose = false
      sub.once('ready', () => {
        readyAfterClose = true
      })
      await new Promise((r) => setTimeout(r, 50))
      release() // the answer arrives after close() ended the connection
      await closing
      await new Promise((r) => setTimeout(r, 200))
      expect(readyAfterClose).toBe(true) // the window was hit
      expect(rejections).toEqual([])
    } finally {
      process.off('unhandledRejection', onRejection)
      release()
      proxy.close()
      await own.stop()
    }
  })

  it('runs no close hook that was unregistered', async () => {
    const kit = kitFor()
    const ran: string[] = []
    const off = kit.hub.onClose(() => ran.push('removed'))
    kit.hub.onClose(() => ran.push('kept'))
    off()
    off() // a second call changes nothing
    // A hook that unregisters itself while the hooks run does not make the next one be skipped.
    const self = kit.hub.onClose(() => {
      ran.push('self')
      self()
    })
    kit.hub.onClose(() => ran.push('after self'))
    await kit.close()
    expect(ran).toEqual(['kept', 'self', 'after self'])
  })

  it('leaves a client it does not own open', async () => {
    const client = new Redis(redis.url)
    await client.ping()
    const kit = createRedkit({ redis: client, prefix, configFile: false, env: {} })
    expect(kit.hub.owned).toBe(false)
    kit.hub.dedicated('blocking')
    await kit.close()
    expect(client.status).toBe('ready')
    expect(await client.ping()).toBe('PONG')
    await client.quit()
  })
})

describe('building blocks', () => {
  it('visits every matching key with SCAN in bounded steps', async () => {
    const kit = kitFor({ commandTimeout: 300 })
    const keys = kit.keys.module('scan')
    await kit.hub.exec((r) => Promise.all(Array.from({ length: 1200 }, (_, i) => r.set(keys.key(i), '1'))))
    await kit.redis.set(`${prefix}:other:1`, '1')
    const seen = new Set<string>()
    let steps = 0
    await kit.hub.scan(
      keys.pattern(),
      (batch) => {
        steps++
        for (const k of batch) seen.add(k)
      },
      50,
    )
    expect(seen.size).toBe(1200)
    expect([...seen].every((k) => k.startsWith(keys.base))).toBe(true)
    expect(steps).toBeGreaterThan(10)
    await kit.close()
  })

  it('runs Lua scripts by SHA and falls back to EVAL after a SCRIPT FLUSH', async () => {
    const kit = kitFor()
    const key = kit.keys.module('app').key('lua')
    const script = new LuaScript(`return redis.call('INCRBY', KEYS[1], ARGV[1])`)
    expect(await kit.hub.exec((r) => script.run(r, [key], [2]))).toBe(2)
    await kit.redis.script('FLUSH')
    expect(await kit.hub.exec((r) => script.run(r, [key], [3]))).toBe(5)
    await kit.close()
  })

  it('isolates a throwing listener and supports once()', () => {
    const events = new RedkitEvents()
    const seen: number[] = []
    events.on('reconnecting', () => {
      throw new Error('broken listener')
    })
    events.on('reconnecting', ({ delayMs }) => seen.push(delayMs))
    events.once('reconnecting', ({ delayMs }) => seen.push(-delayMs))
    expect(events.has('reconnecting')).toBe(true)
    events.emit('reconnecting', { delayMs: 1 })
    events.emit('reconnecting', { delayMs: 2 })
    expect(seen).toEqual([1, -1, 2])
    events.emit('error', { error: new Error('nobody listens'), connection: 'command' }) // must not throw
    events.clear()
    expect(events.has('reconnecting')).toBe(false)
  })

  it('tells connection failures from reply errors', () => {
    expect(isConnectionError(new ConnectionError('x'))).toBe(true)
    expect(isConnectionError(new Error('Command timed out'))).toBe(true)
    expect(isConnectionError(new Error('connect ECONNREFUSED 127.0.0.1:1'))).toBe(true)
    expect(isConnectionError(new Error('READONLY You cannot write against a read only replica.'))).toBe(true)
    expect(
      isConnectionError(new Error('WRONGTYPE Operation against a key holding the wrong kind of value')),
    ).toBe(false)
    expect(isConnectionError(new Error('MOVED 3999 127.0.0.1:7002'))).toBe(true)
    expect(isConnectionError('a string')).toBe(false)
  })
})

describe('kit when Redis is down', () => {
  it('does not throw at creation for an unreachable server and fails commands fast with ConnectionError', async () => {
    const port = await freePort()
    const errors: RedkitEventMap['error'][] = []
    const kit = createRedkit({
      redis: `redis://127.0.0.1:${port}`,
      prefix,
      configFile: false,
      env: {},
      commandTimeout: 500,
    })
    kit.on('error', (e) => errors.push(e))
    const started = Date.now()
    const error = await kit.hub.exec((r) => r.get('x')).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(ConnectionError)
    expect((error as ConnectionError).code).toBe('E_CONNECTION')
    expect(Date.now() - started).toBeLessThan(3000)
    const health = await kit.health()
    expect(health.status).toBe('down')
    expect(health.error).toBeTruthy()
    expect(errors.length).toBeGreaterThan(0)
    await kit.close()
  })

  it('opens the circuit after repeated failures, then refuses at once', async () => {
    const port = await freePort()
    const states: string[] = []
    const kit = createRedkit({
      redis: `redis://127.0.0.1:${port}`,
      prefix,
      configFile: false,
      env: {},
      commandTimeout: 200,
      breaker: { threshold: 2, cooldown: 60_000 },
    })
    kit.on('breaker', ({ state }) => states.push(state))
    for (let i = 0; i < 2; i++) await kit.hub.exec((r) => r.get('x')).catch(() => undefined)
    expect(kit.hub.breakerState).toBe('open')
    const started = performance.now()
    await expect(kit.hub.exec((r) => r.get('x'))).rejects.toThrow(/circuit open/)
    expect(performance.now() - started).toBeLessThan(50)
    expect(states).toEqual(['open'])
    await kit.close()
  })

  it('fails fast while the server is killed and recovers by itself when it returns on the same port', async () => {
    const { own, kit } = await ownServer({ breaker: { threshold: 3, cooldown: 200 } })
    const key = kit.keys.module('app').key('survivor')
    const events: string[] = []
    kit.on('reconnecting', () => events.push('reconnecting'))
    kit.on('ready', () => events.push('ready'))
    await kit.hub.exec((r) => r.set(key, 'before'))

    await own.server.kill('SIGKILL')
    const started = Date.now()
    const failures = await Promise.all(
      Array.from({ length: 5 }, () => kit.hub.exec((r) => r.set(key, 'during')).catch((e: unknown) => e)),
    )
    for (const f of failures) expect(f).toBeInstanceOf(ConnectionError)
    expect(Date.now() - started).toBeLessThan(3000)

    await own.server.start()
    const recovered = await until(() => kit.hub.exec((r) => r.set(key, 'after')), 10_000)
    expect(recovered).toBe('OK')
    expect(await kit.hub.exec((r) => r.get(key))).toBe('after')
    expect(events).toContain('reconnecting')
    expect(events.at(-1)).toBe('ready')
    expect(kit.hub.breakerState).toBe('closed')
    await kit.close()
    await own.stop()
  })

  it('settles every command within the command timeout when the server hangs under load', async () => {
    const { own, kit } = await ownServer({ commandTimeout: 400, breaker: false })
    const key = kit.keys.module('app').key('load')
    await kit.hub.exec((r) => r.set(key, '0'))
    const durations: number[] = []
    let running = true
    const workers = Array.from({ length: 20 }, async () => {
      while (running) {
        const started = performance.now()
        await kit.hub.exec((r) => r.incr(key)).catch(() => undefined)
        durations.push(performance.now() - started)
      }
    })
    await new Promise((r) => setTimeout(r, 200))
    own.server.pause() // sockets stay open, nothing is answered
    await new Promise((r) => setTimeout(r, 1500))
    running = false
    await Promise.all(workers)
    own.server.resume()
    // Bounded from the call: no command waits behind an auto-pipeline stuck on the hung socket.
    expect(Math.max(...durations)).toBeLessThan(400 + 250)
    await kit.close()
    await own.stop()
  })

  it('does not run a command later that already failed with a timeout while Redis was away', async () => {
    const { own, kit } = await ownServer({ commandTimeout: 300, breaker: false })
    const key = kit.keys.module('app').key('late')
    await kit.hub.exec((r) => r.set(key, '0'))
    await own.server.kill('SIGKILL')
    await expect(kit.hub.exec((r) => r.incr(key))).rejects.toBeInstanceOf(ConnectionError)
    await own.server.start()
    await until(() => kit.hub.exec((r) => r.ping()), 10_000)
    // The server restarted empty; the timed-out INCR must not have been replayed into it.
    expect(await kit.hub.exec((r) => r.get(key))).toBeNull()
    await kit.close()
    await own.stop()
  })
})
