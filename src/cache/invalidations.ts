/** A mark from {@link InvalidationLog.mark}: the point, in this instance's order, where it was taken. */
export type InvalidationMark = number

/** A write made with a mark, kept a while so news of an invalidation arriving after it can undo it. */
interface RecentWrite {
  rkey: string
  tags: readonly string[]
  versions: readonly number[]
  at: number
}

/** Keys and tags remembered before the oldest are forgotten (marks before that are not judged). */
const MAX_KNOWN = 10_000
/** How long, and how many, recent writes are kept: news from other instances arrives well within. */
const RECENT_MS = 30_000
const MAX_RECENT = 10_000
/**
 * When the bus reconnects, writes remembered from this long before its connection dropped are
 * undone too: news published just before the drop may have been lost with it.
 */
const LOST_MARGIN_MS = 5_000

/**
 * The order in which this instance learned of invalidations (its own, and other instances' over
 * the bus), so that a write can tell whether the origin call it stores started before one of
 * them. A mark is taken before the call; the write is skipped when, after the mark, a key it
 * writes was deleted, its namespace cleared or one of its tags invalidated: what the origin read
 * may predate that invalidation. Another instance's invalidation can land in Redis just before
 * the write while its message arrives just after: recent writes are kept so that such news
 * undoes them.
 */
export class InvalidationLog {
  #clock = 0
  /** Marks below this cannot be judged (what came after them was forgotten, or lost). */
  #floor = 0
  readonly #tags = new Map<string, number>()
  readonly #keys = new Map<string, number>()
  readonly #prefixes = new Map<string, number>()
  #recent: RecentWrite[] = []
  /**
   * The keys and tags of recent writes: news naming none of them (the usual case) skips the scan
   * of up to {@link MAX_RECENT} writes. Rebuilt whenever writes leave the list.
   */
  readonly #recentKeys = new Set<string>()
  readonly #recentTags = new Set<string>()
  readonly #undo: (rkeys: string[]) => void

  /** `undo` deletes written keys that news arriving after their write showed to be invalid. */
  constructor(undo: (rkeys: string[]) => void) {
    this.#undo = undo
  }

  /** A mark to pass to {@link changedSince} once the origin answered. */
  mark(): InvalidationMark {
    return this.#clock
  }

  /** True when something learned after `mark` concerns a write of `rkey` carrying `tags`. */
  changedSince(mark: InvalidationMark, rkey: string, tags: readonly string[]): boolean {
    if (mark < this.#floor) return true
    if ((this.#keys.get(rkey) ?? 0) > mark) return true
    for (const tag of tags) if ((this.#tags.get(tag) ?? 0) > mark) return true
    for (const [prefix, at] of this.#prefixes) if (at > mark && rkey.startsWith(prefix)) return true
    return false
  }

  /** Keeps a write made with a mark (after it landed and {@link changedSince} still said no). */
  remember(rkey: string, tags: readonly string[], versions: readonly number[]): void {
    const now = Date.now()
    const oldest = this.#recent[0]
    // Pruned in batches, once the oldest is half a window past due: pruning whenever it was just
    // due would filter the whole list on nearly every write of a steady stream.
    if (this.#recent.length >= MAX_RECENT || (oldest && oldest.at < now - RECENT_MS * 1.5)) {
      this.#keep(this.#recent.filter((w) => w.at >= now - RECENT_MS).slice(-MAX_RECENT / 2))
    }
    this.#recent.push({ rkey, tags, versions, at: now })
    this.#recentKeys.add(rkey)
    for (const tag of tags) this.#recentTags.add(tag)
  }

  /** Tags were invalidated: `versions` are their new versions. */
  tags(versions: Readonly<Record<string, number>>): void {
    const at = this.#tick(this.#tags)
    let concerned = false
    for (const tag of Object.keys(versions)) {
      this.#tags.set(tag, at)
      if (this.#recentTags.has(tag)) concerned = true
    }
    if (!concerned) return
    // A write that read a version at least this new may have read it after the INCR, with an
    // origin call that started before: it is undone. One that read an older version is invalid anyway.
    this.#undoWhere((w) =>
      w.tags.some((tag, i) => Object.hasOwn(versions, tag) && (w.versions[i] ?? 0) >= (versions[tag] ?? 0)),
    )
  }

  /** Keys were deleted (purged). */
  keys(rkeys: readonly string[]): void {
    const at = this.#tick(this.#keys)
    let concerned = false
    for (const rkey of rkeys) {
      this.#keys.set(rkey, at)
      if (this.#recentKeys.has(rkey)) concerned = true
    }
    if (!concerned) return
    const deleted = new Set(rkeys)
    this.#undoWhere((w) => deleted.has(w.rkey))
  }

  /** Every key starting with `prefix` was deleted (a namespace cleared). */
  prefix(prefix: string): void {
    const at = this.#tick(this.#prefixes)
    this.#prefixes.set(prefix, at)
    this.#undoWhere((w) => w.rkey.startsWith(prefix))
  }

  /**
   * News may have been lost (the bus reconnected): no earlier mark is trusted. Writes remembered
   * from a few seconds before `downSince` (when the subscription dropped) onwards are undone;
   * news about earlier ones arrived before the drop. Without `downSince` (the subscription came
   * up late), every recent write is undone.
   */
  lost(downSince?: number): void {
    this.#clock++
    this.#floor = this.#clock
    const from = downSince === undefined ? Number.NEGATIVE_INFINITY : downSince - LOST_MARGIN_MS
    this.#undoWhere((w) => w.at >= from)
  }

  #tick(map: Map<string, number>): number {
    const at = ++this.#clock
    if (map.size >= MAX_KNOWN) {
      map.clear()
      this.#floor = at
    }
    return at
  }

  #undoWhere(match: (write: RecentWrite) => boolean): void {
    if (this.#recent.length === 0) return
    const undone = new Set<string>()
    const kept = this.#recent.filter((w) => {
      if (!match(w)) return true
      undone.add(w.rkey)
      return false
    })
    if (undone.size === 0) return
    this.#keep(kept)
    this.#undo([...undone])
  }

  #keep(recent: RecentWrite[]): void {
    this.#recent = recent
    this.#recentKeys.clear()
    this.#recentTags.clear()
    for (const w of recent) {
      this.#recentKeys.add(w.rkey)
      for (const tag of w.tags) this.#recentTags.add(tag)
    }
  }
}
