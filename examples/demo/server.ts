import express from 'express'
import { createRedkit } from 'redkit'
import { health } from 'redkit/middleware'
import { demoRedisUrl } from './redis.js'

const { url, source } = await demoRedisUrl()
const kit = createRedkit({ redis: url, prefix: 'demo' })
kit.on('error', ({ error, connection }) => console.warn(`[redis ${connection}] ${error.message}`))

const app = express()
app.use(health(kit))

app.get('/', (_req, res) => {
  res.json({ name: 'redkit demo', try: ['/healthz', '/visits'] })
})

// The app's own commands use the shared client.
app.get('/visits', async (_req, res) => {
  const visits = await kit.redis.incr(kit.keys.module('demo').key('visits'))
  res.json({ visits })
})

const port = Number(process.env.PORT ?? 3000)
const server = app.listen(port, '127.0.0.1', () => {
  const base = `http://127.0.0.1:${port}`
  console.log(`redkit demo on ${base} (Redis: ${url}, ${source})`)
  console.log('Try:')
  console.log(`  curl -s ${base}/healthz`)
  console.log(`  curl -s ${base}/visits`)
})

async function shutdown(): Promise<void> {
  server.close()
  await kit.close()
  process.exit(0)
}
process.on('SIGINT', shutdown)
process.on('SIGTERM', shutdown)
