import { describe, expect, it } from 'vitest'
import { InvalidationLog } from '../../src/cache/invalidations.js'

/** A log whose undos are recorded, one array per call. */
function recording(): { log: InvalidationLog; undone: string[][] } {
  const undone: string[][] = []
  return { log: new InvalidationLog((rkeys) => undone.push(rkeys)), undone }
}

describe('recent marked writes and late news', () => {
  it('news about other keys or tags leaves recent writes alone', () => {
    const { log, undone } = recording()
    log.remember('a', ['t'], [1])
    log.remember('b', [], [])
    log.keys(['c'])
    log.tags({ u: 3 })
    log.tags({ t: 2 }) // a read version 1, older: invalid by its version already
    expect(undone).toEqual([])
  })

  it('a delete or a tag invalidation undoes exactly the writes it concerns, each key once', () => {
    const { log, undone } = recording()
    log.remember('a', [], [])
    log.remember('b', ['t'], [4])
    log.remember('a', [], []) // written twice in the window
    log.remember('c', ['t'], [2])
    log.keys(['a', 'x'])
    expect(undone).toEqual([['a']])
    log.keys(['a'])
    expect(undone).toHaveLength(1) // already undone and forgotten
    log.tags({ t: 3 })
    expect(undone).toEqual([['a'], ['b']])
    log.keys(['c'])
    expect(undone).toEqual([['a'], ['b'], ['c']])
  })
})
