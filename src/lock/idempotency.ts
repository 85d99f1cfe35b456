import { createHash, randomUUID } from 'node:crypto'
import type { Redkit } from '../kit.js'
import { CLAIM, DELETE_IF, EXPIRE_IF, REPLACE_IF } from './scripts.js'

/** A response as stored for replay. */
export interface StoredResponse {
  status: number
  headers: Record<string, string | string[]>
  body: Buffer
}

/** What `begin()` found for a key. */
export type IdempotencyBegin =
  | { kind: 'run'; token: string }
  | { kind: 'replay'; response: StoredResponse }
  | { kind: 'busy'; leftMs: number }
  | { kind: 'mismatch' }

const HEX_DIGEST = /^[0-9a-f]{64}$/

/** Fingerprints are stored as SHA-256 hex, so any text (even with the record's `|`) is safe. */
function digest(fingerprint: string): string {
  return HEX_DIGEST.test(fingerprint) ? fingerprint : createHash('sha256').update(fingerprint).digest('hex')
}

interface StoredJson {
  s: number
  h: Record<string, string | string[]>
  b: string
}

declare module '../events.js' {
  interface RedkitEventMap {
    /** A request with a known Idempotency-Key got the stored response (handler not run). */
    'idempotency:replay': Record<string, never>
  }
}

/**
 * Idempotency records in Redis, one per (scope, key): `p|<fingerprint>|<token>` while the first
 * request runs (a lease the middleware extends), `d|<fingerprint>|<response json>` once done.
 * Claiming is one atomic script, so exactly one of any number of concurrent requests runs.
 */
export class IdempotencyStore {
  readonly #kit: Redkit

  constructor(kit: Redkit) {
    this.#kit = kit
  }

  /** Redis key of a record (scope and key escaped). */
  key(scope: string, key: string): string {
    return this.#kit.keys.module('idempotency').key(scope, key)
  }

  /** Claims the key for a first request, or tells what is already there. */
  async begin(scope: string, key: string, fp: string, leaseMs: number): Promise<IdempotencyBegin> {
    const fingerprint = digest(fp)
    const token = randomUUID()
    const record = this.key(scope, key)
    const claim = `p|${fingerprint}|${token}`
    const reply = await this.#kit.hub.exec(
      (redis) => CLAIM.run(redis, [record], [claim, leaseMs]),
      // On a stalled server a claim given up on may still land later, and the client's retry
      // would then find its own key busy for a whole lease: dropped right behind it.
      (redis) => DELETE_IF.eval(redis, [record], [claim]),
    )
    if (reply === 'claimed') return { kind: 'run', token }
    const [value, leftMs] = reply as [string, number]
    const state = value.slice(0, 2)
    const rest = value.slice(2)
    const bar = rest.indexOf('|')
    if (rest.slice(0, bar) !== fingerprint) return { kind: 'mismatch' }
    if (state === 'p|') return { kind: 'busy', leftMs: Number(leftMs) }
    const json = JSON.parse(rest.slice(bar + 1)) as StoredJson
    return {
      kind: 'replay',
      response: { status: json.s, headers: json.h, body: Buffer.from(json.b, 'base64') },
    }
  }

  /** Stores the response of the first request for `ttlMs`; false when the claim was lost meanwhile. */
  async complete(
    scope: string,
    key: string,
    fingerprint: string,
    token: string,
    response: StoredResponse,
    ttlMs: number,
  ): Promise<boolean> {
    fingerprint = digest(fingerprint)
    const json: StoredJson = { s: response.status, h: response.headers, b: response.body.toString('base64') }
    const value = `d|${fingerprint}|${JSON.stringify(json)}`
    const ok = await this.#kit.hub.exec((redis) =>
      REPLACE_IF.run(redis, [this.key(scope, key)], [`p|${fingerprint}|${token}`, value, ttlMs]),
    )
    return ok === 1
  }

  /** Extends the lease of a request still running; false when the claim is gone. */
  async extend(
    scope: string,
    key: string,
    fingerprint: string,
    token: string,
    leaseMs: number,
  ): Promise<boolean> {
    fingerprint = digest(fingerprint)
    const ok = await this.#kit.hub.exec((redis) =>
      EXPIRE_IF.run(redis, [this.key(scope, key)], [`p|${fingerprint}|${token}`, leaseMs]),
    )
    return ok === 1
  }

  /** Drops the claim (a 5xx, an aborted response) so the client may retry with the same key. */
  async abort(scope: string, key: string, fingerprint: string, token: string): Promise<void> {
    fingerprint = digest(fingerprint)
    await this.#kit.hub.exec((redis) =>
      DELETE_IF.run(redis, [this.key(scope, key)], [`p|${fingerprint}|${token}`]),
    )
  }
}
