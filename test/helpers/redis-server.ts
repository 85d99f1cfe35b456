import { type ChildProcess, execFileSync, spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { createConnection, createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

const INSTALL_HINT =
  'redis-server was not found on PATH. The tests start real Redis servers: install Redis 6.2+ ' +
  '(Debian/Ubuntu: `apt-get install -y redis-server`, macOS: `brew install redis`) and run the tests again.'

/** Throws a clear error when `redis-server` is missing. */
export function assertRedisInstalled(): string {
  try {
    return execFileSync('redis-server', ['--version'], { encoding: 'utf8' }).trim()
  } catch {
    throw new Error(INSTALL_HINT)
  }
}

/** A key prefix unique to one test file (and run), so files never see each other's keys. */
export function uniquePrefix(name: string): string {
  return `t-${name}-${randomBytes(3).toString('hex')}`
}

/** Whether `port` can be bound on 127.0.0.1 right now. */
function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer()
    server.unref()
    server.once('error', () => resolve(false))
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)))
  })
}

/** Offset of a cluster node's bus port (Redis's default `cluster-port`: the client port + 10000). */
const CLUSTER_BUS_OFFSET = 10_000

/**
 * A TCP port that was free a moment ago, taken BELOW the kernel's ephemeral range (32768+ on
 * Linux) and from a block of its own per test worker. Two reasons: a client reconnecting every few
 * milliseconds to a killed server's port inside the ephemeral range can end up connected to itself
 * (TCP simultaneous open), which looks like a server that never answers; and a port freed by one
 * file's kill must not be handed to another file's server running in parallel. The blocks
 * (10000-21999) keep a cluster node's bus port (port + 10000) below that range too; with
 * `bus: true` that bus port must be free as well (a node whose bus port is taken exits at start).
 */
let nextPort = 0
export async function freePort(options: { bus?: boolean } = {}): Promise<number> {
  // REDKIT_TEST_PORT_SHIFT moves a whole run to other blocks, so two checkouts can run side by side.
  const shift = Number(process.env.REDKIT_TEST_PORT_SHIFT ?? 0) || 0
  const worker = (Number(process.env.VITEST_POOL_ID ?? process.env.VITEST_WORKER_ID ?? 0) + shift) % 8
  const base = 10_000 + worker * 1_500
  if (nextPort === 0) nextPort = base + Math.floor(Math.random() * 500)
  for (let tries = 0; tries < 1_500; tries++) {
    const port = nextPort
    nextPort = nextPort + 1 >= base + 1_500 ? base : nextPort + 1
    if (!(await canListen(port))) continue
    if (options.bus && !(await canListen(port + CLUSTER_BUS_OFFSET))) continue
    return port
  }
  throw new Error(`no free port in ${base}-${base + 1_499}`)
}

/**
 * Sends one inline command over a raw socket and returns the reply text (no client library, so the
 * harness does not depend on the code under test). The reply is taken as complete after 25 ms of
 * silence following the first bytes.
 */
export function rawCommand(port: number, command: string, timeoutMs = 1000): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = createConnection({ host: '127.0.0.1', port })
    let data = ''
    let idle: NodeJS.Timeout | undefined
    const timer = setTimeout(() => {
      socket.destroy()
      reject(new Error(`no reply from 127.0.0.1:${port}`))
    }, timeoutMs)
    socket.on('connect', () => socket.write(`${command}\r\n`))
    socket.on('data', (chunk) => {
      data += chunk.toString('utf8')
      clearTimeout(idle)
      idle = setTimeout(() => {
        clearTimeout(timer)
        socket.destroy()
        resolve(data)
      }, 25)
    })
    socket.on('error', (error) => {
      clearTimeout(timer)
      clearTimeout(idle)
      reject(error)
    })
  })
}

async function waitFor(check: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    try {
      if (await check()) return
    } catch {
      // not up yet
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

const running = new Set<ChildProcess>()
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL')
})

/** One redis-server (or sentinel) process started by a test. */
export class RedisProcess {
  readonly port: number
  readonly dir: string
  readonly args: string[]
  readonly sentinel: boolean
  child: ChildProcess | null = null

  constructor(port: number, dir: string, args: string[], sentinel = false) {
    this.port = port
    this.dir = dir
    this.args = args
    this.sentinel = sentinel
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`
  }

  get pid(): number | undefined {
    return this.child?.pid
  }

  /** Starts the process and waits until it answers PING. */
  async start(): Promise<this> {
    assertRedisInstalled()
    const args = [...this.args]
    if (this.sentinel) args.push('--sentinel')
    const child = spawn('redis-server', args, { cwd: this.dir, stdio: ['ignore', 'ignore', 'pipe'] })
    this.child = child
    running.add(child)
    let stderr = ''
    child.stderr?.on('data', (d) => {
      stderr += d
    })
    child.once('exit', () => running.delete(child))
    try {
      await waitFor(
        async () => (await rawCommand(this.port, 'PING', 300)).startsWith('+PONG'),
        10_000,
        `redis on ${this.port}`,
      )
    } catch (error) {
      throw new Error(
        `redis-server on port ${this.port} did not start: ${(error as Error).message} ${stderr}`,
      )
    }
    return this
  }

  /** SIGKILL (a crash) or SIGTERM; resolves when the process has exited. */
  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const child = this.child
    if (!child || child.exitCode !== null || child.signalCode !== null) return
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
    if (signal !== 'SIGKILL') child.kill('SIGCONT')
    child.kill(signal)
    await exited
    this.child = null
  }

  /** SIGSTOP: the process hangs with its sockets open (a frozen VM, a stuck disk). */
  pause(): void {
    this.child?.kill('SIGSTOP')
  }

  /** SIGCONT after {@link pause}. */
  resume(): void {
    this.child?.kill('SIGCONT')
  }

  /** Starts the same server again on the same port (data is not kept). */
  async restart(): Promise<this> {
    await this.kill()
    return this.start()
  }
}

function baseArgs(port: number, dir: string): string[] {
  return [
    '--port',
    String(port),
    '--bind',
    '127.0.0.1',
    '--save',
    '',
    '--appendonly',
    'no',
    '--dir',
    dir,
    '--daemonize',
    'no',
    '--loglevel',
    'warning',
  ]
}

function tempDir(kind: string): string {
  return mkdtempSync(join(tmpdir(), `redkit-${kind}-`))
}

/** A throwaway standalone server on a free port. Call `stop()` in `afterAll`. */
export interface StandaloneRedis {
  server: RedisProcess
  port: number
  url: string
  stop(): Promise<void>
}

/** Starts a standalone redis-server on a free port. */
export async function startRedis(extraArgs: string[] = []): Promise<StandaloneRedis> {
  const dir = tempDir('standalone')
  for (let attempt = 0; ; attempt++) {
    const port = await freePort()
    const server = new RedisProcess(port, dir, [...baseArgs(port, dir), ...extraArgs])
    try {
      await server.start()
      return {
        server,
        port,
        url: server.url,
        stop: async () => {
          await server.kill('SIGKILL')
          rmSync(dir, { recursive: true, force: true })
        },
      }
    } catch (error) {
      await server.kill()
      if (attempt >= 2) throw error
    }
  }
}

/** A Sentinel group: master, one replica, three sentinels monitoring `name`. */
export interface SentinelGroup {
  name: string
  master: RedisProcess
  replica: RedisProcess
  sentinels: RedisProcess[]
  /** The sentinel addresses for `createRedkit({ redis: { sentinels, name } })`. */
  sentinelAddresses: Array<{ host: string; port: number }>
  /** Asks a sentinel for the current master port. */
  masterPort(): Promise<number>
  /** What each sentinel and the replica report, for a failover test's timeout message. */
  describe(): Promise<string>
  stop(): Promise<void>
}

/**
 * Starts master + replica + 3 sentinels (quorum 2, down-after 1000 ms) and waits until every
 * sentinel knows the replica and the other sentinels, so a failover can happen at once.
 */
export async function startSentinelGroup(name = 'mymaster'): Promise<SentinelGroup> {
  const dir = tempDir('sentinel')
  const masterPort = await freePort()
  const master = await new RedisProcess(masterPort, dir, [
    ...baseArgs(masterPort, dir),
    '--dbfilename',
    'm.rdb',
  ]).start()
  const replicaPort = await freePort()
  const replica = await new RedisProcess(replicaPort, dir, [
    ...baseArgs(replicaPort, dir),
    '--dbfilename',
    'r.rdb',
    '--replicaof',
    '127.0.0.1',
    String(masterPort),
    '--replica-priority',
    '100',
  ]).start()
  await waitFor(() => linkUp(replicaPort), 10_000, 'replica to sync')
  const sentinels: RedisProcess[] = []
  for (let i = 0; i < 3; i++) {
    const port = await freePort()
    const file = join(dir, `sentinel-${i}.conf`)
    writeFileSync(
      file,
      [
        `port ${port}`,
        'bind 127.0.0.1',
        `dir ${dir}`,
        `sentinel monitor ${name} 127.0.0.1 ${masterPort} 2`,
        `sentinel down-after-milliseconds ${name} 1000`,
        `sentinel failover-timeout ${name} 5000`,
        `sentinel parallel-syncs ${name} 1`,
        '',
      ].join('\n'),
    )
    sentinels.push(await new RedisProcess(port, dir, [file], true).start())
  }
  await waitFor(
    async () => {
      for (const s of sentinels) {
        const reply = await rawCommand(s.port, `SENTINEL master ${name}`)
        if (!/num-slaves\r\n\$1\r\n1\r\n/.test(reply) || !/num-other-sentinels\r\n\$1\r\n2\r\n/.test(reply))
          return false
      }
      return true
    },
    20_000,
    'sentinels to discover the replica and each other',
  )
  const all = [master, replica, ...sentinels]
  return {
    name,
    master,
    replica,
    sentinels,
    sentinelAddresses: sentinels.map((s) => ({ host: '127.0.0.1', port: s.port })),
    async masterPort() {
      const reply = await rawCommand(sentinels[0]!.port, `SENTINEL get-master-addr-by-name ${name}`)
      const lines = reply.split('\r\n')
      return Number(lines[4])
    },
    async describe() {
      const field = (reply: string, name: string) => {
        const lines = reply.split('\r\n')
        const i = lines.indexOf(name)
        return i >= 0 ? lines[i + 2] : '-'
      }
      const views = await Promise.all(
        sentinels.map(async (s) => {
          const reply = await rawCommand(s.port, `SENTINEL master ${name}`).catch(() => '')
          return `${s.port}: master ${field(reply, 'port')} flags ${field(reply, 'flags')} failover ${field(reply, 'failover-state')}`
        }),
      )
      const role = await rawCommand(replica.port, 'ROLE').catch((e: Error) => e.message)
      return `sentinels [${views.join('; ')}] replica ${replica.port} role ${role.split('\r\n')[2] ?? '?'}`
    },
    async stop() {
      await Promise.all(all.map((p) => p.kill('SIGKILL')))
      rmSync(dir, { recursive: true, force: true })
    },
  }
}

async function linkUp(port: number): Promise<boolean> {
  return (await rawCommand(port, 'INFO replication')).includes('master_link_status:up')
}

/** A 3-master Redis Cluster (no replicas). */
export interface RedisClusterGroup {
  nodes: RedisProcess[]
  /** Seed addresses for `createRedkit({ redis: { cluster } })`. */
  addresses: Array<{ host: string; port: number }>
  stop(): Promise<void>
}

/** Starts three cluster-enabled servers, assigns all 16384 slots and waits for `cluster_state:ok`. */
export async function startCluster(): Promise<RedisClusterGroup> {
  const dir = tempDir('cluster')
  const nodes: RedisProcess[] = []
  for (let i = 0; i < 3; i++) {
    const port = await freePort({ bus: true })
    nodes.push(
      await new RedisProcess(port, dir, [
        ...baseArgs(port, dir),
        '--cluster-enabled',
        'yes',
        '--cluster-config-file',
        `nodes-${port}.conf`,
        '--cluster-node-timeout',
        '2000',
        '--dbfilename',
        `c-${port}.rdb`,
      ]).start(),
    )
  }
  execFileSync(
    'redis-cli',
    [
      '--cluster',
      'create',
      ...nodes.map((n) => `127.0.0.1:${n.port}`),
      '--cluster-replicas',
      '0',
      '--cluster-yes',
    ],
    { stdio: 'ignore', timeout: 20_000 },
  )
  await waitFor(
    async () => {
      for (const n of nodes) {
        if (!(await rawCommand(n.port, 'CLUSTER INFO')).includes('cluster_state:ok')) return false
      }
      return true
    },
    20_000,
    'cluster_state:ok',
  )
  return {
    nodes,
    addresses: nodes.map((n) => ({ host: '127.0.0.1', port: n.port })),
    async stop() {
      await Promise.all(nodes.map((n) => n.kill('SIGKILL')))
      rmSync(dir, { recursive: true, force: true })
    },
  }
}
