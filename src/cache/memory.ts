import { LRUCache } from 'lru-cache'
import type { StoredEntry } from './entry.js'

/** An L1 item: a stored entry (with its decoded value once someone decoded it). */
export type MemoryItem = StoredEntry

/** Bytes counted per item on top of its value (header, tags, key, bookkeeping). */
const OVERHEAD = 96

/**
 * The in-process tier: an LRU bounded by bytes. Items leave when their stale window ends, when
 * the bytes bound evicts them, or when the bus says another instance changed or invalidated them.
 */
export class MemoryTier {
  readonly #lru: LRUCache<string, MemoryItem>
  readonly maxBytes: number

  constructor(maxBytes: number) {
    this.maxBytes = maxBytes
    this.#lru = new LRUCache<string, MemoryItem>({
      maxSize: maxBytes,
      sizeCalculation: (item, key) => item.value.length + key.length + OVERHEAD + item.tags.length * 16,
    })
  }

  /** The item, or undefined when absent or past its stale window. */
  get(key: string, now: number): MemoryItem | undefined {
    const item = this.#lru.get(key)
    if (item === undefined) return undefined
    if (now >= item.staleUntil) {
      this.#lru.delete(key)
      return undefined
    }
    return item
  }

  set(key: string, item: MemoryItem): void {
    // Bigger than the whole tier: lru-cache would refuse it anyway; skip the work.
    if (item.value.length + key.length + OVERHEAD > this.maxBytes) {
      this.#lru.delete(key)
      return
    }
    this.#lru.set(key, item)
  }

  delete(key: string): void {
    this.#lru.delete(key)
  }

  /** Drops every item carrying one of `tags`. */
  deleteTagged(tags: ReadonlySet<string>): number {
    const doomed: string[] = []
    for (const [key, item] of this.#lru.entries()) {
      if (item.tags.some((tag) => tags.has(tag))) doomed.push(key)
    }
    for (const key of doomed) this.#lru.delete(key)
    return doomed.length
  }

  /** Drops every item whose key starts with `prefix`. */
  deletePrefix(prefix: string): void {
    const doomed: string[] = []
    for (const key of this.#lru.keys()) if (key.startsWith(prefix)) doomed.push(key)
    for (const key of doomed) this.#lru.delete(key)
  }

  clear(): void {
    this.#lru.clear()
  }

  /** Number of items held. */
  get size(): number {
    return this.#lru.size
  }

  /** Bytes accounted. */
  get bytes(): number {
    return this.#lru.calculatedSize
  }

  has(key: string): boolean {
    return this.#lru.has(key)
  }
}
