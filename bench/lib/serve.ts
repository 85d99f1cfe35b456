/**
 * Child process of the HTTP bench: builds one case's app and serves it, plus `/__bench/stats`
 * (CPU used and requests served so far) and `/__bench/check` (what the case wants verified).
 * Usage: node --import tsx bench/lib/serve.ts <case-module> <case-name>
 */
import { createServer } from 'node:http'
import { pathToFileURL } from 'node:url'
import type { HttpCaseModule } from './http.js'

const [modulePath, caseName] = process.argv.slice(2)
if (!modulePath || !caseName) throw new Error('usage: serve.ts <case-module> <case-name>')
const mod = (await import(pathToFileURL(modulePath).href)) as HttpCaseModule
const factory = mod.cases[caseName]
if (!factory) throw new Error(`no case ${caseName} in ${modulePath}`)
const built = await factory(JSON.parse(process.env.BENCH_CONTEXT ?? '{}'))
let served = 0
const server = createServer((req, res) => {
  if (req.url?.startsWith('/__bench/')) {
    const body =
      req.url === '/__bench/stats'
        ? Promise.resolve({ cpu: process.cpuUsage(), served })
        : Promise.resolve(built.check ? built.check() : {})
    body.then((b) => {
      res.setHeader('content-type', 'application/json')
      res.end(JSON.stringify(b))
    })
    return
  }
  served++
  built.app(req, res)
})
server.keepAliveTimeout = 60_000
server.listen(0, '127.0.0.1', () => {
  const address = server.address()
  process.stdout.write(`READY ${typeof address === 'object' && address ? address.port : 0}\n`)
})
process.on('SIGTERM', async () => {
  server.close()
  await built.close?.()
  process.exit(0)
})
