import { spawn } from 'node:child_process'
import { mkdtempSync } from 'node:fs'
import { createConnection, createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

function answersPing(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host, port })
    const done = (ok: boolean) => {
      socket.destroy()
      resolve(ok)
    }
    socket.setTimeout(300, () => done(false))
    socket.on('error', () => done(false))
    socket.on('connect', () => socket.write('PING\r\n'))
    socket.on('data', (d) => done(d.toString().startsWith('+PONG')))
  })
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.on('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const address = server.address()
      server.close(() => resolve(typeof address === 'object' && address ? address.port : 0))
    })
  })
}

/**
 * Where the demo's Redis is: `REDIS_URL` if set, else 127.0.0.1:6379 if it answers, else a
 * throwaway `redis-server` started here on a free port and stopped when the demo exits.
 */
export async function demoRedisUrl(): Promise<{ url: string; source: string }> {
  if (process.env.REDIS_URL) return { url: process.env.REDIS_URL, source: 'REDIS_URL' }
  if (await answersPing(6379)) return { url: 'redis://127.0.0.1:6379', source: 'local Redis on 6379' }
  const port = await freePort()
  const dir = mkdtempSync(join(tmpdir(), 'redkit-demo-'))
  const child = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir],
    {
      stdio: 'ignore',
    },
  )
  child.on('error', () => {
    console.error(
      'No Redis found: set REDIS_URL, start Redis on 6379, or install redis-server (apt-get install -y redis-server).',
    )
    process.exit(1)
  })
  process.on('exit', () => child.kill('SIGKILL'))
  for (let i = 0; i < 100 && !(await answersPing(port)); i++) await new Promise((r) => setTimeout(r, 50))
  return { url: `redis://127.0.0.1:${port}`, source: `throwaway redis-server (pid ${child.pid})` }
}
