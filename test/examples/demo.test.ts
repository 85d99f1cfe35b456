import { type ChildProcess, spawn } from 'node:child_process'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { freePort, type StandaloneRedis, startRedis } from '../helpers/index.js'

let redis: StandaloneRedis
let demo: ChildProcess
let base = ''
let output = ''

beforeAll(async () => {
  redis = await startRedis()
  const port = await freePort()
  base = `http://127.0.0.1:${port}`
  // Exactly what `npm run demo` runs, pointed at a throwaway server.
  demo = spawn(process.execPath, ['--import', 'tsx', 'examples/demo/server.ts'], {
    env: { ...process.env, PORT: String(port), REDIS_URL: redis.url, SESSION_SECRET: 'x'.repeat(40) },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  demo.stdout?.on('data', (d) => {
    output += d
  })
  demo.stderr?.on('data', (d) => {
    output += d
  })
  const deadline = Date.now() + 30_000
  while (!output.includes('redkit demo on')) {
    if (Date.now() > deadline || demo.exitCode !== null) throw new Error(`demo did not start: ${output}`)
    await new Promise((r) => setTimeout(r, 100))
  }
}, 40_000)

afterAll(async () => {
  if (demo && demo.exitCode === null) {
    demo.kill('SIGKILL')
  }
  await redis?.stop()
})

describe('npm run demo', () => {
  it('prints its URL and curl commands to try', () => {
    expect(output).toContain(`redkit demo on ${base} (Redis: ${redis.url}, REDIS_URL)`)
    expect(output).toContain(`curl -s ${base}/healthz`)
  })

  it('serves every module on one kit', async () => {
    expect(((await (await fetch(`${base}/healthz`)).json()) as { status: string }).status).toBe('ok')

    const first = await fetch(`${base}/slow-report`)
    const second = await fetch(`${base}/slow-report`)
    expect(first.headers.get('x-cache')).toBe('MISS')
    expect(second.headers.get('x-cache')).toBe('HIT')
    expect(await second.text()).toBe(await first.text())

    const quote = await fetch(`${base}/api/quote`)
    expect(quote.status).toBe(200)
    expect(quote.headers.get('ratelimit-policy')).toBeTruthy()

    const pay = () =>
      fetch(`${base}/payments`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'idempotency-key': '"demo-order-1"' },
        body: JSON.stringify({ amount: 10 }),
      })
    const paid = await pay()
    const replay = await pay()
    expect(paid.status).toBe(201)
    expect(replay.headers.get('idempotent-replayed')).toBe('true')
    expect(await replay.json()).toEqual(await paid.json())

    const login = await fetch(`${base}/account/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ username: 'ann' }),
    })
    expect(login.status).toBe(200)
    const cookie = login.headers.get('set-cookie')?.split(';')[0] ?? ''
    const sessions = await (await fetch(`${base}/account/sessions`, { headers: { cookie } })).json()
    expect(sessions).toHaveLength(1)

    expect((await fetch(`${base}/dashboard`)).status).toBe(200)
  })

  it('stops cleanly on SIGTERM', async () => {
    const exited = new Promise<number | null>((resolve) => demo.once('exit', (code) => resolve(code)))
    demo.kill('SIGTERM')
    expect(await exited).toBe(0)
  })
})
