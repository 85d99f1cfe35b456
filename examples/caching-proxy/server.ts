/**
 * A caching reverse proxy: every request (any method, path, headers and body) is forwarded to
 * UPSTREAM; responses are cached by redkit's shared HTTP cache in Redis, as a CDN or Varnish
 * would cache them (Cache-Control, Vary, validators, stale serving, purge on unsafe methods).
 *
 *   UPSTREAM=https://api.example.com PORT=8080 REDIS_URL=redis://127.0.0.1:6379 npm run example:proxy
 */
import { request as httpRequest, type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http'
import { request as httpsRequest } from 'node:https'
import express from 'express'
import { createRedkit, HOP_BY_HOP_FIELDS } from 'redkit'
import { responseCache, sendProblem } from 'redkit/middleware'
import { demoRedisUrl } from '../demo/redis.js'

const upstreamText = process.env.UPSTREAM
if (!upstreamText) {
  console.error('Set UPSTREAM to the origin to put the cache in front of, e.g. UPSTREAM=https://httpbin.org')
  process.exit(1)
}
const upstream = new URL(upstreamText)
const port = Number(process.env.PORT ?? 8080)
const upstreamTimeoutMs = Number(process.env.UPSTREAM_TIMEOUT_MS ?? 30_000)
const { url: redisUrl, source } = await demoRedisUrl()

const kit = createRedkit({ redis: redisUrl, prefix: process.env.REDKIT_PREFIX ?? 'proxy' })
kit.on('error', ({ error, connection }) => console.warn(`[redis ${connection}] ${error.message}`))

function forwardable(headers: IncomingHttpHeaders): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {}
  const listed = String(headers.connection ?? '')
    .split(',')
    .map((h) => h.trim().toLowerCase())
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || HOP_BY_HOP_FIELDS.has(name) || listed.includes(name)) continue
    out[name] = value
  }
  return out
}

const app = express()
app.disable('x-powered-by')
app.disable('etag')

// Mounted for every method: GETs are cached, successful POST/PUT/PATCH/DELETE purge what they change.
const cache = responseCache(kit, { ttl: process.env.CACHE_TTL ?? '1m', statusHeader: 'X-Cache' })
app.use(cache)

app.use(function forward(req, res) {
  const target = new URL(req.originalUrl, upstream)
  const headers = forwardable(req.headers)
  headers.host = upstream.host
  const forwardedFor = req.headers['x-forwarded-for']
  headers['x-forwarded-for'] = forwardedFor
    ? `${forwardedFor}, ${req.socket.remoteAddress}`
    : req.socket.remoteAddress
  headers['x-forwarded-host'] = req.headers.host
  headers['x-forwarded-proto'] = req.protocol
  const send = upstream.protocol === 'https:' ? httpsRequest : httpRequest
  const outgoing = send(target, { method: req.method, headers, timeout: upstreamTimeoutMs }, (incoming) => {
    res.status(incoming.statusCode ?? 502)
    for (const [name, value] of Object.entries(forwardable(incoming.headers))) {
      if (value !== undefined) res.setHeader(name, value)
    }
    // Bytes are relayed as the origin encoded them (no decompression), so the stored
    // Content-Encoding always matches the stored body.
    incoming.pipe(res)
  })
  outgoing.on('timeout', () => outgoing.destroy(new Error('upstream timeout')))
  outgoing.on('error', (error) => {
    if (res.headersSent) {
      res.destroy(error)
      return
    }
    sendProblem(res, {
      status: 502,
      title: 'Bad gateway',
      detail: `The upstream did not answer: ${error.message}`,
    })
  })
  req.pipe(outgoing)
})

const server = app.listen(port, () => {
  console.log(
    `redkit caching proxy on http://127.0.0.1:${port} -> ${upstream.origin} (Redis: ${redisUrl}, ${source})`,
  )
  console.log(`  curl -si http://127.0.0.1:${port}/ | grep -i x-cache`)
})

async function shutdown(): Promise<void> {
  server.close()
  await kit.close()
  process.exit(0)
}
process.on('SIGINT', shutdown)
process.on('SIGTERM', shutdown)
