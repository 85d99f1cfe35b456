import { crc32 } from 'node:zlib'

/**
 * One stored entry as the response cache and other raw users see it: the value bytes and its
 * timeline. `freshUntil` and `staleUntil` are epoch milliseconds.
 */
export interface RawEntry {
  value: Buffer
  /** When the entry was written (epoch ms, clock of the writing process). */
  storedAt: number
  /** Served as fresh before this instant. */
  freshUntil: number
  /** Kept (for stale serving) until this instant; Redis drops it then. */
  staleUntil: number
  tags: string[]
}

/** A {@link RawEntry} with what the engine needs internally. */
export interface StoredEntry extends RawEntry {
  /** Version of each tag (same order as `tags`) when the value was computed. */
  tagVersions: number[]
  /** How long computing the value took (for XFetch early refresh). */
  computeMs: number
  /**
   * The decoded value once someone decoded it (shared by later readers of this entry). Always
   * present as a field, so that setting it does not change the object's shape.
   */
  decoded: { value: unknown } | undefined
  /**
   * Memory tier: until when this entry may be served from memory without checking its tag
   * versions again (`Infinity` without tags). Unpacked entries start unchecked.
   */
  checkedUntil: number
}

const FORMAT = 1
// format byte, storedAt, freshUntil, staleUntil, computeMs (float64 each), tag block length (uint32)
const HEADER = 1 + 8 * 4 + 4

/** Serializes an entry to the single Redis string that holds it (one GET reads everything). */
export function packEntry(entry: StoredEntry): Buffer {
  const tagBlock =
    entry.tags.length === 0
      ? undefined
      : Buffer.from(JSON.stringify(entry.tags.map((tag, i) => [tag, entry.tagVersions[i] ?? 0])), 'utf8')
  const tagLength = tagBlock?.length ?? 0
  const out = Buffer.allocUnsafe(HEADER + tagLength + entry.value.length)
  out[0] = FORMAT
  out.writeDoubleBE(entry.storedAt, 1)
  out.writeDoubleBE(entry.freshUntil, 9)
  out.writeDoubleBE(entry.staleUntil, 17)
  out.writeDoubleBE(entry.computeMs, 25)
  out.writeUInt32BE(tagLength, 33)
  if (tagBlock) tagBlock.copy(out, HEADER)
  entry.value.copy(out, HEADER + tagLength)
  return out
}

/** Parses {@link packEntry} output; `undefined` for bytes of another format (treated as absent). */
export function unpackEntry(bytes: Buffer): StoredEntry | undefined {
  if (bytes.length < HEADER || bytes[0] !== FORMAT) return undefined
  const tagLength = bytes.readUInt32BE(33)
  if (HEADER + tagLength > bytes.length) return undefined
  const tags: string[] = []
  const tagVersions: number[] = []
  if (tagLength > 0) {
    try {
      const pairs = JSON.parse(bytes.toString('utf8', HEADER, HEADER + tagLength)) as Array<[string, number]>
      for (const [tag, version] of pairs) {
        tags.push(tag)
        tagVersions.push(version)
      }
    } catch {
      return undefined
    }
  }
  return {
    value: bytes.subarray(HEADER + tagLength),
    storedAt: bytes.readDoubleBE(1),
    freshUntil: bytes.readDoubleBE(9),
    staleUntil: bytes.readDoubleBE(17),
    computeMs: bytes.readDoubleBE(25),
    tags,
    tagVersions,
    decoded: undefined,
    checkedUntil: tags.length === 0 ? Number.POSITIVE_INFINITY : 0,
  }
}

/**
 * Tells one stored entry from another written to the same key (length and CRC-32 of its stored
 * form): a write announces it on the bus, so that a read in flight can tell whether what it
 * found is that write or something older.
 */
export function entryIdentity(packed: Buffer): string {
  return `${packed.length}:${crc32(packed)}`
}
