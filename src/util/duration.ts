import { ConfigError } from '../errors.js'

/** A duration in milliseconds, or a string such as `'250ms'`, `'30s'`, `'10m'`, `'2h'`, `'1d'`. */
export type Duration = number | string

const UNIT_MS: Record<string, number> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 604_800_000,
}
const DURATION_RE = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$/

/**
 * Converts a {@link Duration} to whole milliseconds.
 * Throws `ConfigError` naming `field` when the value is negative, not finite or not understood.
 *
 * @example
 * parseDuration('10m', 'ttl') // 600000
 */
export function parseDuration(value: Duration, field: string): number {
  if (typeof value === 'number') {
    if (!Number.isFinite(value) || value < 0) {
      throw new ConfigError(
        field,
        `must be a non-negative number of milliseconds, got ${String(value)}`,
        "write 1000 or '1s'",
      )
    }
    return Math.round(value)
  }
  if (typeof value === 'string') {
    const match = DURATION_RE.exec(value)
    if (match) return Math.round(Number(match[1]) * (UNIT_MS[match[2] ?? 'ms'] ?? 1))
  }
  throw new ConfigError(
    field,
    `is not a duration: ${JSON.stringify(value)}`,
    "write milliseconds (1500) or a string such as '30s', '10m', '2h'",
  )
}
