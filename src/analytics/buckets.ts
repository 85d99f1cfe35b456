/** Width of one bucket of a time series. */
export type Granularity = 'minute' | 'hour' | 'day'

/** One bucket of a time series: its start (ms since the epoch, UTC) and its value. */
export interface SeriesPoint {
  t: number
  value: number
}

const MINUTE = 60_000
const HOUR = 3_600_000
const DAY = 86_400_000

/**
 * Buckets are fields of a hash that holds one "chunk" of consecutive buckets (an hour of minutes,
 * a day of hours, 30 days of days): a few small listpack-encoded hashes instead of one key per
 * bucket, each expiring as a whole at the end of its chunk plus the retention.
 */
export const GRANULARITIES: Record<Granularity, { size: number; chunk: number; code: string }> = {
  minute: { size: MINUTE, chunk: HOUR, code: 'm' },
  hour: { size: HOUR, chunk: DAY, code: 'h' },
  day: { size: DAY, chunk: 30 * DAY, code: 'd' },
}

/** Start of the bucket of `granularity` that contains `t`. */
export function bucketStart(t: number, granularity: Granularity): number {
  const size = GRANULARITIES[granularity].size
  return t - (t % size)
}

/** Start of the chunk (hash key) that holds the bucket containing `t`. */
export function chunkStart(t: number, granularity: Granularity): number {
  const chunk = GRANULARITIES[granularity].chunk
  return t - (t % chunk)
}

/** UTC day of `t` as `YYYYMMDD` (the unit of uniques and top pages). */
export function dayKey(t: number): string {
  const d = new Date(t)
  return `${d.getUTCFullYear()}${String(d.getUTCMonth() + 1).padStart(2, '0')}${String(d.getUTCDate()).padStart(2, '0')}`
}

/** Every UTC day from `from` to `to` inclusive, as `YYYYMMDD`, at most `max` of them (the latest). */
export function daysBetween(from: number, to: number, max = 400): string[] {
  const days: string[] = []
  for (let t = bucketStart(to, 'day'); t >= bucketStart(from, 'day') && days.length < max; t -= DAY) {
    days.push(dayKey(t))
  }
  return days.reverse()
}

/** A date-like value as milliseconds since the epoch. */
export function toMs(value: Date | number | string | undefined, fallback: number): number {
  if (value === undefined) return fallback
  const ms = value instanceof Date ? value.getTime() : typeof value === 'number' ? value : Date.parse(value)
  if (!Number.isFinite(ms)) throw new RangeError(`Not a date: ${String(value)}`)
  return ms
}
