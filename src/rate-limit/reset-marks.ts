/** Resets told apart key by key; past this, the oldest is dropped. */
const MAX_MARKS = 1000

/**
 * Which keys were reset lately, so that a check sent before a reset of its key does not remember
 * the block its answer reports (the reset may have lifted it since), while checks of other keys
 * still do. A check reads {@link now} before it is sent and asks {@link resetSince} with it once
 * answered. Bounded: when a mark is dropped to make room, every check sent before it counts as
 * reset, which costs such a key one more Redis call, never a block kept after its reset.
 *
 * @example
 * const since = marks.now
 * const reply = await check(key)
 * if (reply.blocked && !marks.resetSince(key, since)) remember(key)
 */
export class ResetMarks {
  /** Counts resets: a mark is the count its reset brought it to. */
  #tick = 0
  /** Checks sent before this tick count as reset, whatever their key. */
  #floor = 0
  /** Key -> tick of its latest reset, oldest first. */
  readonly #marks = new Map<string, number>()
  readonly #max: number

  constructor(max = MAX_MARKS) {
    this.#max = max
  }

  /** What a check reads before it is sent. */
  get now(): number {
    return this.#tick
  }

  /** Records a reset of `key`. */
  mark(key: string): void {
    const tick = ++this.#tick
    this.#marks.delete(key)
    this.#marks.set(key, tick)
    if (this.#marks.size > this.#max) {
      const [oldest, at] = this.#marks.entries().next().value as [string, number]
      this.#marks.delete(oldest)
      this.#floor = at
    }
  }

  /** Records that any key may have been reset (a reset may have been missed). */
  markAll(): void {
    this.#floor = ++this.#tick
    this.#marks.clear()
  }

  /** Whether `key` may have been reset after a check that read `since` from {@link now}. */
  resetSince(key: string, since: number): boolean {
    return since < this.#floor || (this.#marks.get(key) ?? 0) > since
  }
}
