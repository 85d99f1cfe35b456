import { describe, expect, it } from 'vitest'
import { isCompressed } from '../../src/codec/index.js'
import { CodecError, decode, encode } from '../../src/index.js'

describe('codec', () => {
  it('round-trips Date, BigInt of any size, Buffer, null, Map, Set and nested structures', () => {
    const value = {
      at: new Date('2024-05-01T10:00:00.123Z'),
      small: 42n,
      huge: 2n ** 200n + 1n,
      negative: -(10n ** 40n),
      bytes: Buffer.from([0, 1, 2, 255]),
      nothing: null,
      map: new Map<unknown, unknown>([
        [1, 'one'],
        ['k', { nested: [1, [2, [3]]] }],
      ]),
      set: new Set(['a', 1]),
      rows: [
        { id: 1, name: 'x' },
        { id: 2, name: 'y' },
      ],
      plain: { a: { b: { c: 'deep' } } },
      number: 1.5,
      text: 'héllo',
    }
    const back = decode<typeof value>(encode(value))
    expect(back).toEqual(value)
    expect(back.at).toBeInstanceOf(Date)
    expect(back.map).toBeInstanceOf(Map)
    expect(back.set).toBeInstanceOf(Set)
    expect(Buffer.isBuffer(back.bytes)).toBe(true)
    expect(typeof back.huge).toBe('bigint')
    expect(back.plain).not.toBeInstanceOf(Map)
  })

  it('keeps 1 and "1" apart', () => {
    expect(decode(encode([1, '1']))).toEqual([1, '1'])
    expect(encode([1]).equals(encode(['1']))).toBe(false)
  })

  it('rejects functions with a CodecError naming the path', () => {
    const error = (() => {
      try {
        encode({ rows: [{ fn: () => 1 }] })
      } catch (e) {
        return e
      }
    })()
    expect(error).toBeInstanceOf(CodecError)
    expect((error as CodecError).code).toBe('E_CODEC')
    expect((error as CodecError).path).toBe('$.rows[0].fn')
  })

  it('rejects circular structures with a CodecError', () => {
    const a: Record<string, unknown> = { name: 'a' }
    a.self = a
    expect(() => encode(a)).toThrow(CodecError)
    const list: unknown[] = []
    list.push({ list })
    expect(() => encode(list)).toThrow(/circular/)
  })

  it('accepts shared (non-circular) references', () => {
    const shared = { x: 1 }
    expect(decode(encode({ a: shared, b: shared }))).toEqual({ a: { x: 1 }, b: { x: 1 } })
  })

  it('compresses large values when asked, flagged in the first byte', () => {
    const big = { text: 'abc'.repeat(10_000) }
    const plain = encode(big)
    const packed = encode(big, { compressAbove: 1024 })
    expect(isCompressed(plain)).toBe(false)
    expect(isCompressed(packed)).toBe(true)
    expect(packed.length).toBeLessThan(plain.length / 10)
    expect(decode(packed)).toEqual(big)
    expect(isCompressed(encode({ a: 1 }, { compressAbove: 1024 }))).toBe(false)
  })

  it('rejects bytes it did not make', () => {
    expect(() => decode(Buffer.alloc(0))).toThrow(CodecError)
    expect(() => decode(Buffer.from([9, 1, 2]))).toThrow(CodecError)
  })
})
