import { deflateRawSync, inflateRawSync } from 'node:zlib'
import { Packr } from 'msgpackr'
import { CodecError } from '../errors.js'

/** Options of {@link encode}. */
export interface EncodeOptions {
  /**
   * Compress the encoded form (raw deflate) when it is at least this many bytes; `false` never
   * compresses. Compression is kept only when it saves space.
   * @default false
   */
  compressAbove?: number | false
}

// Records (plain objects with inline structure definitions) keep `{}` and `Map` apart: plain
// objects come back as objects, Maps as Maps. Every message carries its own record definitions,
// so any process can decode any entry.
const packr = new Packr({ useBigIntExtension: true, useRecords: true, mapsAsObjects: false, moreTypes: true })

/** First byte of every encoded value: how the rest is stored. */
const FORMAT_PLAIN = 0
const FORMAT_DEFLATE = 1

/**
 * Encodes a value to bytes: msgpack (Date, BigInt of any size, Buffer, typed arrays, null,
 * undefined, Map, Set, nested arrays and objects round-trip), optionally deflated.
 * Throws `CodecError` (`E_CODEC`) for values that cannot round-trip: functions, symbols, circular
 * structures.
 *
 * @example
 * const bytes = encode({ at: new Date(), total: 10n ** 30n })
 * decode(bytes) // { at: Date, total: 1000000000000000000000000000000n }
 */
export function encode(value: unknown, options: EncodeOptions = {}): Buffer {
  assertEncodable(value)
  let packed: Buffer
  try {
    packed = packr.pack(value)
  } catch (error) {
    throw new CodecError(`The value cannot be encoded: ${(error as Error).message}.`, { cause: error })
  }
  const threshold = options.compressAbove ?? false
  if (threshold !== false && packed.length >= threshold) {
    const deflated = deflateRawSync(packed)
    if (deflated.length < packed.length) return prepend(FORMAT_DEFLATE, deflated)
  }
  return prepend(FORMAT_PLAIN, packed)
}

/**
 * Decodes bytes made by {@link encode}. Throws `CodecError` for bytes it did not make.
 *
 * @example
 * decode(encode(new Map([[1, 'a']]))) // Map { 1 => 'a' }
 */
export function decode<T = unknown>(bytes: Uint8Array): T {
  if (bytes.length === 0) throw new CodecError('Cannot decode an empty buffer.')
  const format = bytes[0]
  try {
    const body = bytes.subarray(1)
    if (format === FORMAT_PLAIN) return packr.unpack(body) as T
    if (format === FORMAT_DEFLATE) return packr.unpack(inflateRawSync(body)) as T
  } catch (error) {
    throw new CodecError(`Stored bytes are not a valid encoded value: ${(error as Error).message}.`, {
      cause: error,
    })
  }
  throw new CodecError(`Unknown encoding format byte ${String(format)}.`)
}

/** True when `bytes` hold a compressed value. */
export function isCompressed(bytes: Uint8Array): boolean {
  return bytes[0] === FORMAT_DEFLATE
}

function prepend(format: number, body: Buffer): Buffer {
  const out = Buffer.allocUnsafe(body.length + 1)
  out[0] = format
  body.copy(out, 1)
  return out
}

/**
 * msgpack silently drops functions and overflows the stack on cycles; walking first turns both
 * into a clear error naming the path instead of a truncated value.
 */
function assertEncodable(value: unknown): void {
  const ancestors = new Set<object>()
  const visit = (v: unknown, path: string): void => {
    const type = typeof v
    if (type === 'function' || type === 'symbol') {
      throw new CodecError(`Cannot encode a ${type} at ${path}: only data round-trips.`, { path })
    }
    if (type !== 'object' || v === null) return
    const object = v as object
    if (ArrayBuffer.isView(object) || object instanceof Date || object instanceof ArrayBuffer) return
    if (ancestors.has(object)) {
      throw new CodecError(`Cannot encode a circular structure (at ${path}).`, { path })
    }
    ancestors.add(object)
    if (Array.isArray(object)) {
      for (let i = 0; i < object.length; i++) visit(object[i], `${path}[${i}]`)
    } else if (object instanceof Map) {
      for (const [k, item] of object) {
        visit(k, `${path}.<key>`)
        visit(item, `${path}.get(${String(k)})`)
      }
    } else if (object instanceof Set) {
      for (const item of object) visit(item, `${path}.<item>`)
    } else {
      for (const k of Object.keys(object)) visit((object as Record<string, unknown>)[k], `${path}.${k}`)
    }
    ancestors.delete(object)
  }
  visit(value, '$')
}
