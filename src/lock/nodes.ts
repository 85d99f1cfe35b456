import { Redis, type RedisOptions } from 'ioredis'
import { isConnectionError, withTimeout } from '../connection/hub.js'
import { backoff } from '../connection/retry.js'
import { ConnectionError } from '../errors.js'
import type { Redkit } from '../kit.js'
import type { LuaScript } from '../util/script.js'

/** One independent Redis master taking part in the Redlock quorum. */
export interface LockNode {
  /** For messages: `kit` or `host:port`. */
  readonly label: string
  /**
   * Runs `script`; with `undo`, a call given up on for want of an answer is followed on the same
   * connection by `undo` (see `ConnectionHub.exec`), sent as a plain EVAL so that it does not
   * depend on the server knowing the script.
   */
  run(
    script: LuaScript,
    keys: readonly string[],
    args: ReadonlyArray<string | number>,
    undo?: Undo,
  ): Promise<unknown>
  close(): Promise<void>
}

/** A script that undoes a claim given up on (see {@link LockNode.run}). */
export interface Undo {
  script: LuaScript
  keys: readonly string[]
  args: ReadonlyArray<string | number>
}

/** The kit's own connection (standalone, Sentinel or Cluster), through `hub.exec`. */
export function kitNode(kit: Redkit): LockNode {
  const hub = kit.hub
  return {
    label: 'kit',
    run: (script, keys, args, undo) =>
      hub.exec(
        (redis) => script.run(redis, keys, args),
        undo && ((redis) => undo.script.eval(redis, undo.keys, undo.args)),
      ),
    close: async () => undefined,
  }
}

/** A lock server: a URL, ioredis options, or a client the app owns (then it is left open). */
export type LockServer = string | RedisOptions | Redis

/** A separate master for the quorum; the connection is owned unless the app passed a client. */
export function serverNode(server: LockServer, commandTimeoutMs: number, maxRetryDelayMs: number): LockNode {
  const owned = !(server instanceof Redis)
  const common: RedisOptions = {
    commandTimeout: commandTimeoutMs,
    enableAutoPipelining: true,
    retryStrategy: backoff(maxRetryDelayMs),
    connectionName: 'redkit:lock',
  }
  const client =
    server instanceof Redis
      ? server
      : typeof server === 'string'
        ? new Redis(server, common)
        : new Redis({ ...common, ...server })
  // Errors surface as failed votes; without a listener ioredis would print each reconnect failure.
  if (owned) client.on('error', () => undefined)
  const label = `${client.options.host ?? 'localhost'}:${client.options.port ?? 6379}`
  // Once connected, a server that drops out is reported at once instead of queueing: a queued
  // acquisition that already counted as failed would otherwise still run when the server returns.
  let connected = client.status === 'ready'
  client.on('ready', () => {
    connected = true
  })
  return {
    label,
    run: async (script, keys, args, undo) => {
      if (connected && client.status !== 'ready') {
        throw new ConnectionError(`Lock server ${label} is not connected (${client.status}).`)
      }
      try {
        return await withTimeout(script.run(client, keys, args), commandTimeoutMs)
      } catch (error) {
        if (undo && isConnectionError(error)) {
          withTimeout(undo.script.eval(client, undo.keys, undo.args), commandTimeoutMs).catch(() => undefined)
        }
        if (isConnectionError(error) && !(error instanceof ConnectionError)) {
          throw new ConnectionError(`Lock server ${label} did not answer: ${(error as Error).message}.`, {
            cause: error,
          })
        }
        throw error
      }
    },
    close: async () => {
      if (!owned) return
      if (client.status === 'ready') await withTimeout(client.quit(), commandTimeoutMs).catch(() => undefined)
      client.disconnect()
    },
  }
}

/** What each server answered in one round. */
export interface Votes<T> {
  /** Servers that granted, with their answer. */
  granted: Array<{ node: LockNode; value: T }>
  /** Servers that refused because someone else holds a key, with the holder's remaining ms. */
  refused: Array<{ node: LockNode; leftMs: number }>
  /** Servers that failed (unreachable, timed out, reply error). */
  failed: Array<{ node: LockNode; error: unknown }>
}

/**
 * Runs `ask` on every node and resolves as soon as the outcome is decided: `quorum` grants, or
 * so many refusals/failures that a quorum can no longer be reached. Late answers keep arriving in
 * `votes` (the caller may use them to clean up).
 */
export function poll<T>(
  nodes: readonly LockNode[],
  quorum: number,
  ask: (node: LockNode) => Promise<{ granted: true; value: T } | { granted: false; leftMs: number }>,
): Promise<Votes<T>> {
  const votes: Votes<T> = { granted: [], refused: [], failed: [] }
  return new Promise((resolve) => {
    let answered = 0
    let settled = false
    const check = () => {
      answered++
      const against = votes.refused.length + votes.failed.length
      if (
        !settled &&
        (votes.granted.length >= quorum || against > nodes.length - quorum || answered === nodes.length)
      ) {
        settled = true
        resolve(votes)
      }
    }
    for (const node of nodes) {
      ask(node).then(
        (answer) => {
          if (answer.granted) votes.granted.push({ node, value: answer.value })
          else votes.refused.push({ node, leftMs: answer.leftMs })
          check()
        },
        (error: unknown) => {
          votes.failed.push({ node, error })
          check()
        },
      )
    }
  })
}
