/**
 * Writes waiting in process for the next flush. Recording only touches these maps (no I/O), and a
 * flush swaps the whole object for an empty one, so recording never waits for Redis. Everything is
 * counted in `size`, the bound of what is kept while Redis is unreachable.
 */
/** One route's requests in one minute, summed; expanded into counters and rankings at flush. */
export interface RequestTally {
  method: string
  route: string
  count: number
  /** Requests per status class, index 1–5. */
  byClass: number[]
  latencyMs: number
  pageViews: number
}

export class PendingWrites {
  /** metric → minute start → increment (expanded into minute/hour/day buckets and totals at flush). */
  readonly counts = new Map<string, Map<number, number>>()
  /** hash key → field → increment (bucket writes of a failed flush, retried as they were). */
  readonly hincr = new Map<string, Map<string, number>>()
  /** sorted-set key → member → increment (top pages and routes). */
  readonly zincr = new Map<string, Map<string, number>>()
  /** HyperLogLog key → visitor ids. */
  readonly pfadd = new Map<string, Set<string>>()
  /** `metric\0day` → visitor fingerprints that still need the day's salt. */
  readonly visitors = new Map<string, Set<string>>()
  /** list key → JSON entries, oldest first. */
  readonly lpush = new Map<string, string[]>()
  /** key → absolute expiry (ms) to set after writing it. */
  readonly expireAt = new Map<string, number>()
  /** key → members/entries to keep (sorted sets trimmed by rank, lists by index). */
  readonly keep = new Map<string, number>()
  /** minute → route key → tally of the requests counted by the middleware. */
  readonly requests = new Map<number, Map<string, RequestTally>>()
  #minute = -1
  #tallies: Map<string, RequestTally> | undefined
  /** Distinct entries held. */
  size = 0

  get empty(): boolean {
    return this.size === 0
  }

  count(metric: string, minute: number, n: number): void {
    let byMinute = this.counts.get(metric)
    if (!byMinute) {
      byMinute = new Map()
      this.counts.set(metric, byMinute)
    }
    const before = byMinute.get(minute)
    if (before === undefined) this.size++
    byMinute.set(minute, (before ?? 0) + n)
  }

  /** The tally of `method route` in `minute` (one map lookup on the request path). */
  tally(minute: number, method: string, route: string): RequestTally {
    let tallies = minute === this.#minute ? this.#tallies : undefined
    if (!tallies) {
      tallies = this.requests.get(minute)
      if (!tallies) {
        tallies = new Map()
        this.requests.set(minute, tallies)
      }
      this.#minute = minute
      this.#tallies = tallies
    }
    // Route patterns start with '/' or '(', so a GET route never collides with 'METHOD route'.
    const key = method === 'GET' ? route : `${method} ${route}`
    let tally = tallies.get(key)
    if (!tally) {
      tally = { method, route, count: 0, byClass: [0, 0, 0, 0, 0, 0], latencyMs: 0, pageViews: 0 }
      tallies.set(key, tally)
      this.size++
    }
    return tally
  }

  hashIncr(key: string, field: string, n: number): void {
    let fields = this.hincr.get(key)
    if (!fields) {
      fields = new Map()
      this.hincr.set(key, fields)
    }
    const before = fields.get(field)
    if (before === undefined) this.size++
    fields.set(field, (before ?? 0) + n)
  }

  rank(key: string, member: string, n: number): void {
    let members = this.zincr.get(key)
    if (!members) {
      members = new Map()
      this.zincr.set(key, members)
    }
    const before = members.get(member)
    if (before === undefined) this.size++
    members.set(member, (before ?? 0) + n)
  }

  unique(key: string, id: string): void {
    let ids = this.pfadd.get(key)
    if (!ids) {
      ids = new Set()
      this.pfadd.set(key, ids)
    }
    if (!ids.has(id)) {
      ids.add(id)
      this.size++
    }
  }

  visitor(metricDay: string, fingerprint: string): void {
    let ids = this.visitors.get(metricDay)
    if (!ids) {
      ids = new Set()
      this.visitors.set(metricDay, ids)
    }
    if (!ids.has(fingerprint)) {
      ids.add(fingerprint)
      this.size++
    }
  }

  /** Appends to a capped log: beyond `cap` the oldest pending entry goes (the list keeps only `cap`). */
  log(key: string, entry: string, cap: number): void {
    let entries = this.lpush.get(key)
    if (!entries) {
      entries = []
      this.lpush.set(key, entries)
    }
    entries.push(entry)
    if (entries.length > cap) entries.shift()
    else this.size++
  }

  expire(key: string, at: number): void {
    const before = this.expireAt.get(key)
    if (before === undefined || at > before) this.expireAt.set(key, at)
  }
}
