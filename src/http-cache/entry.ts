/** A response header as stored: lower-case name and its value(s). */
export type StoredHeader = [name: string, value: string | string[]]

/** Everything the cache knows about a stored response besides its body. */
export interface StoredMeta {
  status: number
  /** Response headers without hop-by-hop fields, `Age`, `Content-Length` and tag headers. */
  headers: StoredHeader[]
  /** When the response was received (epoch ms). */
  responseTime: number
  /** Corrected initial age in seconds at `responseTime` (RFC 9111 §4.2.3). */
  initialAge: number
  /** Freshness lifetime in seconds (RFC 9111 §4.2.1). */
  lifetime: number
  /** Seconds a stale copy may be served while one refresh runs (RFC 5861 §3 or the option). */
  swr: number
  /** Seconds a stale copy may be served when the origin fails (RFC 5861 §4 or the option). */
  sie: number
  /** `must-revalidate`, `proxy-revalidate` or `s-maxage`: never served stale by request choice. */
  mustRevalidate: boolean
  /** `no-cache` (or `Pragma: no-cache`): validated with the origin before every use. */
  noCache: boolean
  /** `public` / `s-maxage` / `must-revalidate`: may be served to a request with `Authorization`. */
  authOk: boolean
  etag?: string
  lastModified?: string
  /** Normalised `Vary` field names, when the response has one. */
  vary?: string[]
  /** Tags the entry was stored with (kept so a refresh can re-store them). */
  tags: string[]
}

/** A decoded response entry. */
export interface ResponseEntry {
  kind: 'response'
  meta: StoredMeta
  body: Buffer
}

/**
 * Stored at the URL's primary key when the response has `Vary`: names the selecting fields and a
 * generation, so variants of a purged URL can never be reached again after the marker is replaced.
 */
export interface VaryMarker {
  kind: 'vary'
  fields: string[]
  generation: string
}

export type StoredEntry = ResponseEntry | VaryMarker

const RESPONSE = 0x52 // 'R'
const VARY = 0x56 // 'V'
const VERSION = 1

/**
 * Binary-safe layout: `[kind u8][version u8][meta length u32 BE][meta JSON][body bytes]`. The
 * body is never text-decoded, so any byte sequence (gzip, images) round-trips unchanged.
 */
export function encodeResponse(meta: StoredMeta, body: Buffer): Buffer {
  const json = Buffer.from(JSON.stringify(meta), 'utf8')
  const out = Buffer.allocUnsafe(6 + json.length + body.length)
  out[0] = RESPONSE
  out[1] = VERSION
  out.writeUInt32BE(json.length, 2)
  json.copy(out, 6)
  body.copy(out, 6 + json.length)
  return out
}

/** Encodes a {@link VaryMarker}. */
export function encodeVaryMarker(fields: string[], generation: string): Buffer {
  const json = Buffer.from(JSON.stringify({ fields, generation }), 'utf8')
  const out = Buffer.allocUnsafe(2 + json.length)
  out[0] = VARY
  out[1] = VERSION
  json.copy(out, 2)
  return out
}

// Entries from the in-process tier come back as the same Buffer object: decode each only once.
const decoded = new WeakMap<Buffer, StoredEntry>()

/**
 * Decodes an entry; `undefined` for anything malformed or of another version (treated as a miss,
 * never served). `memoize: false` for buffers seen once (read from Redis with no memory tier):
 * remembering them would only load the garbage collector.
 */
export function decodeEntry(value: Buffer, memoize = true): StoredEntry | undefined {
  if (!memoize) return parse(value)
  const known = decoded.get(value)
  if (known) return known
  const entry = parse(value)
  if (entry) decoded.set(value, entry)
  return entry
}

function parse(value: Buffer): StoredEntry | undefined {
  if (value.length < 2 || value[1] !== VERSION) return undefined
  try {
    if (value[0] === VARY) {
      const marker = JSON.parse(value.subarray(2).toString('utf8')) as VaryMarker
      if (!Array.isArray(marker.fields) || typeof marker.generation !== 'string') return undefined
      return { kind: 'vary', fields: marker.fields, generation: marker.generation }
    }
    if (value[0] !== RESPONSE || value.length < 6) return undefined
    const length = value.readUInt32BE(2)
    if (6 + length > value.length) return undefined
    const meta = JSON.parse(value.subarray(6, 6 + length).toString('utf8')) as StoredMeta
    if (typeof meta.status !== 'number' || !Array.isArray(meta.headers)) return undefined
    return { kind: 'response', meta, body: value.subarray(6 + length) }
  } catch {
    return undefined
  }
}
