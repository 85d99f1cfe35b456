import { describe, expect, it } from 'vitest'
import { FillGuard } from '../../src/cache/fill-guard.js'

describe('memory fills of reads in flight', () => {
  it('a read fills memory when nothing changed its key since it started', () => {
    const guard = new FillGuard()
    const ticket = guard.begin('k')
    guard.changed('other')
    expect(guard.mayFill(ticket, () => 'x')).toBe(true)
    guard.end(ticket)
  })

  it('a delete, or a write of another entry, since the read started keeps what it found out', () => {
    const guard = new FillGuard()
    const deleted = guard.begin('k')
    guard.changed('k')
    expect(guard.mayFill(deleted, () => 'old')).toBe(false)
    guard.end(deleted)
    const overwritten = guard.begin('k')
    guard.changed('k', 'new')
    expect(guard.mayFill(overwritten, () => 'old')).toBe(false)
    guard.end(overwritten)
  })

  it('a read that found the very entry announced since it started may fill memory', () => {
    const guard = new FillGuard()
    const ticket = guard.begin('k')
    guard.changed('k', 'new')
    expect(guard.mayFill(ticket, () => 'new')).toBe(true)
    guard.changed('k')
    guard.changed('k', 'new')
    // A delete came in between: 'new' may have been written again, or what the read found is
    // from before the delete; it stays out.
    expect(guard.mayFill(ticket, () => 'new')).toBe(false)
    guard.end(ticket)
  })

  it('a read that starts after a change is not held back by it', () => {
    const guard = new FillGuard()
    const first = guard.begin('k')
    guard.changed('k')
    const second = guard.begin('k')
    expect(guard.mayFill(first, () => 'x')).toBe(false)
    expect(guard.mayFill(second, () => 'x')).toBe(true)
    guard.end(first)
    guard.end(second)
  })

  it('clearing many keys at once keeps every read in flight out', () => {
    const guard = new FillGuard()
    const ticket = guard.begin('k')
    guard.changedAll()
    expect(guard.mayFill(ticket, () => 'x')).toBe(false)
    guard.end(ticket)
    const later = guard.begin('k')
    expect(guard.mayFill(later, () => 'x')).toBe(true)
    guard.end(later)
  })
})
