import { type ChildProcess, spawn } from 'node:child_process'
import type { IncomingMessage, ServerResponse } from 'node:http'
import autocannon from 'autocannon'
import { CONNECTIONS, DURATION_S, pin, WARMUP_S } from './env.js'
import type { Measurement } from './table.js'

/** What a case factory returns: a request handler (an Express app), and optional close/check. */
export interface BuiltCase {
  app: (req: IncomingMessage, res: ServerResponse) => void
  close?: () => Promise<void>
  /** Facts to verify after the run, e.g. `{ handlerCalls: 1 }` for a cache-hit case. */
  check?: () => Promise<Record<string, unknown>> | Record<string, unknown>
}

/** A module of HTTP cases: `export const cases = { name: async (ctx) => ({ app }) }`. */
export interface HttpCaseModule {
  cases: Record<string, (context: Record<string, unknown>) => Promise<BuiltCase>>
}

/** One HTTP case: which module and factory serve it, and the request autocannon sends. */
export interface HttpCase {
  name: string
  module: string
  factory?: string
  path: string
  method?: string
  headers?: Record<string, string>
  body?: string
  /** JSON-serialisable data handed to the factory (Redis URL, prefix, ...). */
  context?: Record<string, unknown>
}

async function startCaseServer(c: HttpCase): Promise<{ child: ChildProcess; port: number }> {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', 'bench/lib/serve.ts', c.module, c.factory ?? c.name],
    {
      stdio: ['ignore', 'pipe', 'inherit'],
      env: { ...process.env, BENCH_CONTEXT: JSON.stringify(c.context ?? {}), NODE_ENV: 'production' },
    },
  )
  const port = await new Promise<number>((resolve, reject) => {
    let out = ''
    child.stdout?.on('data', (d) => {
      out += d
      const m = /READY (\d+)/.exec(out)
      if (m) resolve(Number(m[1]))
    })
    child.once('exit', (code) => reject(new Error(`case ${c.name} exited with ${code}`)))
  })
  pin(child.pid, 0)
  return { child, port }
}

async function getJson(port: number, path: string): Promise<Record<string, unknown>> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`)
  return (await res.json()) as Record<string, unknown>
}

function cannon(port: number, c: HttpCase, seconds: number): Promise<autocannon.Result> {
  return new Promise((resolve, reject) => {
    autocannon(
      {
        url: `http://127.0.0.1:${port}${c.path}`,
        method: (c.method ?? 'GET') as autocannon.Request['method'],
        headers: c.headers,
        body: c.body,
        connections: CONNECTIONS,
        duration: seconds,
      },
      (error, result) => (error ? reject(error) : resolve(result)),
    )
  })
}

/**
 * Measures one HTTP case: server pinned to core 0 (this process and Redis stay on core 1),
 * warm-up, then a measured run; CPU µs per request comes from the server's own `process.cpuUsage()`.
 */
export async function measureHttp(c: HttpCase, pass: number): Promise<Measurement> {
  const { child, port } = await startCaseServer(c)
  try {
    if (WARMUP_S > 0) await cannon(port, c, WARMUP_S)
    const before = (await getJson(port, '/__bench/stats')) as { cpu: NodeJS.CpuUsage; served: number }
    const result = await cannon(port, c, DURATION_S)
    const after = (await getJson(port, '/__bench/stats')) as { cpu: NodeJS.CpuUsage; served: number }
    const served = after.served - before.served - 1
    const cpuUs = after.cpu.user + after.cpu.system - before.cpu.user - before.cpu.system
    const check = await getJson(port, '/__bench/check')
    const errors = result.errors + result.non2xx
    return {
      name: c.name,
      pass,
      opsPerSec: result.requests.total / result.duration,
      cpuUsPerOp: cpuUs / Math.max(1, served),
      p50Ms: result.latency.p50,
      p99Ms: result.latency.p99,
      check: [
        errors ? `${errors} errors/non-2xx` : '',
        ...Object.entries(check).map(([k, v]) => `${k}=${JSON.stringify(v)}`),
      ]
        .filter(Boolean)
        .join(', '),
    }
  } finally {
    child.kill('SIGTERM')
    await new Promise((r) => child.once('exit', r))
  }
}
