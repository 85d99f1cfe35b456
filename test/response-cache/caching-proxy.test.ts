import { type ChildProcess, spawn } from 'node:child_process'
import { createServer, type Server } from 'node:http'
import { gzipSync } from 'node:zlib'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { freePort, type StandaloneRedis, startRedis, uniquePrefix } from '../helpers/index.js'
import { eventually, sleep } from './setup.js'

let redis: StandaloneRedis
let upstream: Server
let proxy: ChildProcess
let base = ''
const hits: string[] = []

beforeAll(async () => {
  redis = await startRedis()
  upstream = createServer((req, res) => {
    let body = ''
    req.on('data', (d) => {
      body += d
    })
    req.on('end', () => {
      hits.push(`${req.method} ${req.url}`)
      if (req.url === '/gzip') {
        res.writeHead(200, {
          'content-encoding': 'gzip',
          'content-type': 'text/plain',
          'cache-control': 'max-age=60',
        })
        res.end(gzipSync('zipped body'))
        return
      }
      if (req.method === 'POST') {
        res.writeHead(201, { 'content-type': 'text/plain' })
        res.end(`got ${body}`)
        return
      }
      res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'max-age=60', 'x-upstream': 'yes' })
      res.end(`${req.method} ${req.url} #${hits.length}`)
    })
  })
  const upstreamPort = await freePort()
  await new Promise<void>((r) => upstream.listen(upstreamPort, '127.0.0.1', () => r()))
  const port = await freePort()
  base = `http://127.0.0.1:${port}`
  proxy = spawn(process.execPath, ['--import', 'tsx', 'examples/caching-proxy/server.ts'], {
    env: {
      ...process.env,
      UPSTREAM: `http://127.0.0.1:${upstreamPort}`,
      PORT: String(port),
      REDIS_URL: redis.url,
      REDKIT_PREFIX: uniquePrefix('rc-proxy'),
    },
    stdio: 'ignore',
  })
  await eventually(async () => {
    try {
      return (await fetch(`${base}/ready`)).ok
    } catch {
      return false
    }
  }, 20_000)
})

afterAll(async () => {
  proxy?.kill('SIGTERM')
  upstream?.close()
  await redis?.stop()
})

describe('examples/caching-proxy', () => {
  it('forwards GETs and serves repeats from the cache', async () => {
    const first = await fetch(`${base}/items?a=1`)
    expect(await first.text()).toMatch(/^GET \/items\?a=1 #/)
    expect(first.headers.get('x-upstream')).toBe('yes')
    await sleep(100)
    const before = hits.length
    const second = await fetch(`${base}/items?a=1`)
    expect(second.headers.get('x-cache')).toBe('HIT')
    expect(hits.length).toBe(before)
  })

  it('forwards POST bodies and purges the target URL', async () => {
    await fetch(`${base}/items?a=1`)
    const post = await fetch(`${base}/items?a=1`, { method: 'POST', body: 'payload' })
    expect([post.status, await post.text()]).toEqual([201, 'got payload'])
    await eventually(async () => (await fetch(`${base}/items?a=1`)).headers.get('x-cache') === 'MISS')
  })

  it('relays compressed bodies byte for byte', async () => {
    await fetch(`${base}/gzip`)
    await sleep(100)
    const res = await fetch(`${base}/gzip`)
    expect(res.headers.get('x-cache')).toBe('HIT')
    expect(res.headers.get('content-encoding')).toBe('gzip')
    expect(await res.text()).toBe('zipped body')
  })
})
