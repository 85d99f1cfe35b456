import express from 'express'
import request from 'supertest'
import { describe, expect, it } from 'vitest'
import { sendProblem, sendUnavailable } from '../../middleware/index.js'

describe('problem+json responses', () => {
  const app = express()
  app.get('/teapot', (_req, res) =>
    sendProblem(res, { status: 418, title: 'Teapot', detail: 'Short and stout.', size: 'small' }),
  )
  app.get('/down', (_req, res) => sendUnavailable(res, 'Store unavailable', 'Try again shortly.'))

  it('sends RFC 9457 problem details with extension members and no caching', async () => {
    const res = await request(app).get('/teapot').expect(418)
    expect(res.headers['content-type']).toBe('application/problem+json; charset=utf-8')
    expect(res.headers['cache-control']).toBe('no-store')
    expect(JSON.parse(res.text)).toEqual({
      type: 'about:blank',
      status: 418,
      title: 'Teapot',
      detail: 'Short and stout.',
      size: 'small',
    })
  })

  it('answers 503 with Retry-After for a store that cannot be reached', async () => {
    const res = await request(app).get('/down').expect(503)
    expect(res.headers['retry-after']).toBe('1')
    expect(JSON.parse(res.text)).toMatchObject({ status: 503, title: 'Store unavailable' })
  })
})
