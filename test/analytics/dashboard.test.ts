import { existsSync, mkdirSync } from 'node:fs'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import express from 'express'
import { type Browser, chromium } from 'playwright-core'
import request from 'supertest'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import { analytics } from '../../middleware/analytics.js'
import { analyticsDashboard } from '../../middleware/analytics-dashboard.js'
import { createRedkit, type Redkit, visitorFingerprint } from '../../src/index.js'
import { type StandaloneRedis, startRedis, uniquePrefix } from '../helpers/index.js'

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
]
const CHARTS = [
  'c-requests',
  'c-status',
  'c-routes',
  'c-pages',
  'c-uniques',
  'c-cache',
  'c-ratelimit',
  'c-locks',
]

/**
 * Runs in the page (a string: this project type-checks without the DOM library): for each chart,
 * whether Chart.js drew it, the sum of its data and how many canvas pixels are painted.
 */
const INSPECT_CHARTS = `${JSON.stringify(CHARTS)}.map(function (id) {
  var canvas = document.getElementById(id);
  var chart = Chart.getChart(canvas);
  var sum = 0;
  if (chart) chart.data.datasets.forEach(function (d) { d.data.forEach(function (v) { sum += v || 0; }); });
  var pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  var painted = 0;
  for (var i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) painted++;
  return { id: id, rendered: Boolean(chart), sum: sum, painted: painted };
})`

let redis: StandaloneRedis
let kit: Redkit
let browser: Browser
let server: ReturnType<express.Express['listen']>
let base: string

/** An hour of traffic and a week of visitors, recorded at past times (only Date is faked). */
async function seed(kit: Redkit): Promise<void> {
  const a = kit.analytics
  const emit = kit.events.emit.bind(kit.events) as (event: string, payload: unknown) => void
  const now = Date.now()
  vi.useFakeTimers({ toFake: ['Date'] })
  try {
    for (let day = 6; day >= 1; day--) {
      vi.setSystemTime(now - day * 86_400_000)
      const visitors = 40 + ((day * 37) % 50)
      for (let v = 0; v < visitors; v++) a.pageView('/', { visitorId: `v${day}-${v}` })
    }
    const routes = ['/products/:id', '/', '/cart', '/search', '/products/:id/reviews', '(unmatched)']
    for (let m = 59; m >= 1; m--) {
      vi.setSystemTime(now - m * 60_000)
      const load = 20 + Math.round(15 * Math.sin(m / 6)) + (m % 7)
      for (let i = 0; i < load; i++) {
        const route = routes[(i * 7 + m) % routes.length] as string
        const status = route === '(unmatched)' ? 404 : i % 23 === 0 ? 500 : i % 11 === 0 ? 302 : 200
        a.request({
          route,
          method: i % 9 === 0 ? 'POST' : 'GET',
          status,
          durationMs: 5 + (i % 30),
          fingerprint: visitorFingerprint(`198.51.100.${i % 40}`, 'Mozilla/5.0'),
        })
      }
      for (let i = 0; i < 10 + (m % 5); i++) {
        emit(i % 4 === 0 ? 'cache:miss' : 'cache:hit', { cache: 'response', key: 'k', layer: 'l1' })
      }
      if (m % 3 === 0) emit('ratelimit:blocked', { policy: 'api', retryAfterMs: 1000 })
      if (m % 4 === 0) emit('lock:wait', { resource: 'report', waitedMs: 30 + m })
    }
  } finally {
    vi.useRealTimers()
  }
  // Today's tiles have data even when the hour above began yesterday.
  for (let i = 0; i < 4; i++)
    emit(i === 0 ? 'cache:miss' : 'cache:hit', { cache: 'response', key: 'k', layer: 'l1' })
  await a.flush()
}

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) {
    throw new Error(
      `${CHROMIUM} not found: the dashboard test needs Chromium (Debian: apt-get install -y chromium)`,
    )
  }
  redis = await startRedis()
  kit = createRedkit({ redis: redis.url, prefix: uniquePrefix('analytics-dash'), configFile: false, env: {} })
  kit.analytics.configure({ flushInterval: 200 })
  const app = express()
  app.use(analytics(kit, { skip: (req) => req.path.startsWith('/dashboard') }))
  app.use('/dashboard', analyticsDashboard(kit, { title: 'Shop analytics', refresh: '1s' }))
  app.get('/products/:id', (req, res) => res.json({ id: req.params.id }))
  await seed(kit)
  for (let i = 0; i < 30; i++) await request(app).get(`/products/${i}`).expect(200)
  await kit.analytics.flush()
  server = app.listen(0, '127.0.0.1')
  await new Promise((resolve) => server.once('listening', resolve))
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS })
})

afterAll(async () => {
  await browser?.close()
  server?.close()
  await kit?.close()
  await redis?.stop()
})

describe('analytics dashboard', () => {
  it('renders every chart with data in headless Chromium, with assets from installed packages', async () => {
    const page = await browser.newPage({ viewport: { width: 1400, height: 900 } })
    const external: string[] = []
    const failures: string[] = []
    page.on('request', (r) => {
      if (!r.url().startsWith(base)) external.push(r.url())
    })
    page.on('pageerror', (e) => failures.push(e.message))
    // The browser's own favicon request is not the dashboard's.
    page.on('response', (r) => {
      if (r.status() >= 400 && !r.url().endsWith('/favicon.ico')) failures.push(`${r.status()} ${r.url()}`)
    })
    await page.goto(`${base}/dashboard`)
    await page.waitForSelector('body[data-ready="true"]', { timeout: 15_000 })
    const charts = (await page.evaluate(INSPECT_CHARTS)) as Array<{
      id: string
      rendered: boolean
      sum: number
      painted: number
    }>
    for (const chart of charts) {
      expect(chart.rendered, chart.id).toBe(true)
      expect(chart.sum, chart.id).toBeGreaterThan(0)
      expect(chart.painted, chart.id).toBeGreaterThan(500)
    }
    const tiles = (await page.evaluate(
      "({ requests: document.getElementById('t-requests').textContent, uniques: document.getElementById('t-uniques').textContent, cache: document.getElementById('t-cache').textContent })",
    )) as { requests?: string; uniques?: string; cache?: string }
    expect(Number(tiles.requests?.replace(/\D/g, ''))).toBeGreaterThanOrEqual(30)
    expect(Number(tiles.uniques?.replace(/\D/g, ''))).toBeGreaterThan(0)
    expect(tiles.cache).toMatch(/%/)
    expect(external).toEqual([])
    expect(failures).toEqual([])
    const dir = process.env.REDKIT_SCREENSHOT_DIR ?? join(tmpdir(), 'redkit-dashboard')
    mkdirSync(dir, { recursive: true })
    await page.screenshot({ path: join(dir, 'dashboard.png'), fullPage: true })
    await page.close()
  })

  it('serves Chart.js from the installed package and answers data as JSON', async () => {
    const app = express().use('/d', analyticsDashboard(kit))
    const js = await request(app).get('/d/assets/chart.umd.min.js').expect(200)
    expect(js.headers['content-type']).toMatch(/javascript/)
    expect(js.text.length).toBeGreaterThan(100_000)
    const data = await request(app).get('/d/data').expect(200)
    expect(data.body.requests.t).toHaveLength(60)
    expect(data.body.topRoutes.length).toBeGreaterThan(0)
    const html = await request(app).get('/d').expect(200)
    expect(html.text).toContain('src="/d/assets/chart.umd.min.js"')
    expect(html.headers['content-security-policy']).toContain("script-src 'self'")
  })
})
