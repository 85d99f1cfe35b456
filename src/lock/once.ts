import { randomUUID } from 'node:crypto'
import { CodecError, ConfigError, LockBusyError, LockLostError, LockUnavailableError } from '../errors.js'
import type { Redkit } from '../kit.js'
import { CLAIM, DELETE_IF, EXPIRE_IF, REPLACE_IF } from './scripts.js'

export interface ResolvedOnce {
  ttlMs: number
  leaseMs: number
  waitMs: number
}

const RUNNING = 'r:'
const DONE = 'd:'

/**
 * `kit.locks.once()`: one record per key, `r:<token>` while a job runs (under an extended lease),
 * `d:<json>` once it is done (kept for `ttlMs`).
 */
export async function runOnce<T>(
  kit: Redkit,
  key: string,
  job: (signal: AbortSignal) => Promise<T> | T,
  options: ResolvedOnce,
): Promise<T> {
  if (typeof key !== 'string' || key.length === 0) {
    throw new ConfigError(
      'key',
      `must be a non-empty string, got ${JSON.stringify(key)}`,
      "write 'invoice:42:send'",
    )
  }
  if (typeof job !== 'function') throw new ConfigError('job', 'must be a function', 'pass async () => result')
  const recordKey = kit.keys.module('once').key(key)
  const mine = RUNNING + randomUUID()
  const hub = kit.hub
  const started = Date.now()
  let attempts = 0
  for (;;) {
    attempts++
    let reply: unknown
    try {
      reply = await hub.exec(
        (redis) => CLAIM.run(redis, [recordKey], [mine, options.leaseMs]),
        // A claim given up on may still run on a stalled server: dropped right behind it.
        (redis) => DELETE_IF.eval(redis, [recordKey], [mine]),
      )
    } catch (error) {
      throw new LockUnavailableError(
        `Cannot run once(${key}): Redis unavailable: ${(error as Error).message}`,
        {
          resource: key,
          attempts,
          cause: error,
        },
      )
    }
    if (reply === 'claimed') break
    const [value, leftMs] = reply as [string, number]
    if (value.startsWith(DONE)) return (JSON.parse(value.slice(DONE.length)) as { v: T }).v
    const elapsed = Date.now() - started
    if (elapsed >= options.waitMs) {
      kit.events.emit('lock:busy', { resource: key })
      throw new LockBusyError(`once(${key}) is running elsewhere; gave up after ${elapsed} ms.`, {
        resource: key,
        attempts,
        retryAfterMs: Number(leftMs),
      })
    }
    const pause = Math.min(
      100 + Math.random() * 100,
      Math.max(1, Number(leftMs) + 1),
      options.waitMs - elapsed,
    )
    await new Promise((r) => setTimeout(r, pause))
  }

  // We run the job; keep the lease alive meanwhile.
  const controller = new AbortController()
  const lose = (cause?: unknown) => {
    if (controller.signal.aborted) return
    kit.events.emit('lock:lost', { resource: key })
    controller.abort(new LockLostError(`The once(${key}) lease was lost.`, { resource: key, cause }))
  }
  let expiresAt = Date.now() + options.leaseMs
  const timer = setInterval(
    () => {
      hub
        .exec((redis) => EXPIRE_IF.run(redis, [recordKey], [mine, options.leaseMs]))
        .then(
          (ok) => {
            if (ok === 1) expiresAt = Date.now() + options.leaseMs
            else lose()
          },
          (error: unknown) => {
            if (Date.now() >= expiresAt) lose(error)
          },
        )
    },
    Math.max(5, Math.floor(options.leaseMs / 3)),
  )
  timer.unref?.()
  const giveUp = async (error: unknown): Promise<never> => {
    clearInterval(timer)
    await hub
      .exec((redis) => DELETE_IF.run(redis, [recordKey], [mine]))
      .catch((cleanup: unknown) => {
        kit.events.emit('error', { error: cleanup as Error, connection: 'lock' })
      })
    throw error
  }
  let value: T
  let stored: string
  try {
    value = await job(controller.signal)
  } catch (error) {
    return giveUp(error)
  }
  try {
    stored = JSON.stringify({ v: value })
  } catch (error) {
    // Not left claimed: waiting callers would block until the lease lapses, then run it anyway.
    return giveUp(
      new CodecError(
        `once(${key}): the job ran but its result cannot be stored as JSON (${(error as Error).message}); ` +
          'nothing was recorded, so a later call runs the job again. Return plain JSON data (no BigInt, no cycles).',
        { cause: error },
      ),
    )
  }
  clearInterval(timer)
  try {
    const ok = await hub.exec((redis) =>
      REPLACE_IF.run(redis, [recordKey], [mine, DONE + stored, options.ttlMs]),
    )
    if (ok !== 1) lose()
  } catch (error) {
    // The job ran: its result is returned even though it could not be recorded.
    kit.events.emit('error', { error: error as Error, connection: 'lock' })
  }
  return value
}
