import type { RedisClient } from '../connection/hub.js'
import type { ModuleKeys } from '../keys.js'
import type { Redkit } from '../kit.js'

/** Tag versions kept in memory before expired ones are swept. */
const MAX_KNOWN = 50_000

/**
 * Tag invalidation by versions: each tag has a counter in Redis; an entry records the versions
 * of its tags when its value was computed, and counts as absent once any of them moved on.
 * Invalidating a tag is one INCR however many entries carry it, and works on Cluster (each tag
 * key stands alone). Versions are cached in-process; the bus pushes new ones to every instance
 * and the cache also expires after `ttlMs` in case a message was lost.
 */
export class TagVersions {
  readonly #kit: Redkit
  readonly #keys: ModuleKeys
  readonly #ttlMs: number
  readonly #known = new Map<string, { version: number; until: number }>()

  constructor(kit: Redkit, keys: ModuleKeys, ttlMs: number) {
    this.#kit = kit
    this.#keys = keys
    this.#ttlMs = ttlMs
  }

  key(tag: string): string {
    return this.#keys.key('#tags', tag)
  }

  /** Current versions, from memory when known, else one pipelined round trip. */
  async current(tags: readonly string[], refresh = false): Promise<number[]> {
    const now = Date.now()
    const versions: number[] = new Array(tags.length)
    const missing: number[] = []
    for (let i = 0; i < tags.length; i++) {
      const known = refresh ? undefined : this.#known.get(tags[i] as string)
      if (known && known.until > now) versions[i] = known.version
      else missing.push(i)
    }
    if (missing.length > 0) {
      const replies = await this.#kit.hub.exec((redis: RedisClient) =>
        Promise.all(missing.map((i) => redis.get(this.key(tags[i] as string)))),
      )
      const at = Date.now()
      for (let j = 0; j < missing.length; j++) {
        const i = missing[j] as number
        const tag = tags[i] as string
        const version = Number(replies[j] ?? 0)
        // Versions only move forward: a newer one heard on the bus while this GET was answered
        // (its reply read after the message) stays. Once that expires, Redis is believed again
        // (a tag key lost to eviction or a flush starts over from 0).
        const known = this.#known.get(tag)
        if (known && known.until > at && known.version > version) {
          versions[i] = known.version
          continue
        }
        versions[i] = version
        this.#remember(tag, version, at + this.#ttlMs)
      }
    }
    return versions
  }

  /**
   * True when every recorded version is still current. A recorded version newer than the one in
   * memory means this process missed news: it asks Redis before deciding.
   */
  async valid(tags: readonly string[], recorded: readonly number[]): Promise<boolean> {
    if (tags.length === 0) return true
    let versions = await this.current(tags)
    if (recorded.some((v, i) => v > (versions[i] ?? 0))) versions = await this.current(tags, true)
    return recorded.every((v, i) => v === versions[i])
  }

  /**
   * True when memory knows every tag and each recorded version is current: only then may an
   * entry go to L1 (L1 hits skip the tag check; the bus removes them on invalidation).
   */
  knownCurrent(tags: readonly string[], recorded: readonly number[]): boolean {
    const now = Date.now()
    return this.knownUntil(tags, recorded, now) > now
  }

  /**
   * Until when memory trusts every recorded version to be current (the earliest expiry among
   * them; `Infinity` without tags), or 0 when one is unknown, expired or moved on. An L1 copy is
   * served without a check only until then: when a lost message left this process with an old
   * version, that version expires and the copy is checked against Redis.
   */
  knownUntil(tags: readonly string[], recorded: readonly number[], now = Date.now()): number {
    let until = Number.POSITIVE_INFINITY
    for (let i = 0; i < tags.length; i++) {
      const known = this.#known.get(tags[i] as string)
      if (!known || known.until <= now || known.version !== recorded[i]) return 0
      if (known.until < until) until = known.until
    }
    return until
  }

  /** Bumps every tag (one INCR each, pipelined) and returns the new versions. */
  async bump(tags: readonly string[]): Promise<Record<string, number>> {
    const replies = await this.#kit.hub.exec((redis: RedisClient) =>
      Promise.all(tags.map((tag) => redis.incr(this.key(tag)))),
    )
    const out: Record<string, number> = {}
    tags.forEach((tag, i) => {
      out[tag] = Number(replies[i])
      this.learn(tag, Number(replies[i]))
    })
    return out
  }

  /** Records a version heard on the bus (never goes backwards). */
  learn(tag: string, version: number): void {
    const known = this.#known.get(tag)
    if (known && known.version >= version) return
    this.#remember(tag, version, Date.now() + this.#ttlMs)
  }

  /** Per-entity tags (`user:42`) are unbounded in number: expired versions are swept when many pile up. */
  #remember(tag: string, version: number, until: number): void {
    if (this.#known.size >= MAX_KNOWN && !this.#known.has(tag)) {
      const now = Date.now()
      for (const [t, known] of this.#known) if (known.until <= now) this.#known.delete(t)
      if (this.#known.size >= MAX_KNOWN) this.#known.clear()
    }
    this.#known.set(tag, { version, until })
  }

  /** Forgets every cached version (after the bus reconnects, messages may have been lost). */
  forget(): void {
    this.#known.clear()
  }
}
