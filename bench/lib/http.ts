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

type ServerStats = { cpu: NodeJS.CpuUsage; served: number }

const serverStats = (port: number) => getJson(port, '/__bench/stats') as Promise<ServerStats>

/** One row from a measured run: the server's CPU and requests since `before`, and its checks. */
async function measurement(
  c: HttpCase,
  pass: number,
  port: number,
  result: autocannon.Result,
  before: ServerStats,
): Promise<Measurement> {
  const after = await serverStats(port)
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
}

async function stopCaseServer(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return
  const exited = new Promise((r) => child.once('exit', r))
  child.kill('SIGTERM')
  await exited
}

/**
 * Measures one HTTP case: server pinned to core 0 (this process and Redis stay on core 1),
 * warm-up, then a measured run; CPU µs per request comes from the server's own `process.cpuUsage()`.
 */
export async function measureHttp(c: HttpCase, pass: number): Promise<Measurement> {
  const { child, port } = await startCaseServer(c)
  try {
    if (WARMUP_S > 0) await cannon(port, c, WARMUP_S)
    const before = await serverStats(port)
    const result = await cannon(port, c, DURATION_S)
    return await measurement(c, pass, port, result, before)
  } finally {
    await stopCaseServer(child)
  }
}

/**
 * Measures `cases` side by side, `rounds` times: each round starts a fresh server per case, all
 * pinned to core 0, and loads them at the same time (one autocannon each, warm-up included), so
 * that every case of a round runs on the same machine at the same moment. Row `pass` is the round.
 * Sequential runs differ by 5–10% from drift and from one server process to the next, enough to
 * hide a cost of a few per cent; the median of the per-round ratios does not (see `printMedianRatios`).
 * Sharing one core makes every case dearer per request than alone, so compare ratios only.
 */
export async function measureHttpSideBySide(cases: HttpCase[], rounds: number): Promise<Measurement[]> {
  const rows: Measurement[] = []
  for (let round = 1; round <= rounds; round++) {
    const servers = await Promise.all(cases.map((c) => startCaseServer(c)))
    try {
      const load = (seconds: number) =>
        Promise.all(servers.map(({ port }, i) => cannon(port, cases[i] as HttpCase, seconds)))
      if (WARMUP_S > 0) await load(WARMUP_S)
      const before = await Promise.all(servers.map(({ port }) => serverStats(port)))
      const results = await load(DURATION_S)
      for (const [i, { port }] of servers.entries()) {
        rows.push(
          await measurement(
            cases[i] as HttpCase,
            round,
            port,
            results[i] as autocannon.Result,
            before[i] as ServerStats,
          ),
        )
      }
    } finally {
      await Promise.all(servers.map(({ child }) => stopCaseServer(child)))
    }
  }
  return rows
}
