/** Changes to one key seen while reads of it were in flight. */
interface KeyState {
  /** Reads of the key in flight. */
  reads: number
  /** Changes counted since the first of them started. */
  changes: number
  /** Identity of the entry written by the last change, when that change was a write. */
  written: string | undefined
  /** How many changes in a row, ending with the last, wrote that same entry. */
  writtenRun: number
}

/** What a read from Redis noted when it started (see {@link FillGuard}). */
export interface FillTicket {
  readonly key: string
  readonly state: KeyState
  readonly changes: number
  readonly epoch: number
}

/**
 * Decides whether an entry read from Redis may go into the memory tier. A read in flight when
 * its key is written, deleted or cleared (here or on another instance) may return what Redis
 * held before: put into memory after that memory was dropped, it would be served from there,
 * without asking Redis, until it expires. So a read fills memory only when nothing changed its
 * key since it started, or when every change since then wrote the very entry it found (the usual
 * case of a read that follows a write on another instance and meets its bus message). Tag
 * invalidations need no count here: tag versions only move forward, and the version check right
 * before a fill sees the new one.
 *
 * Only reads that go to Redis pay for this (a map lookup at start and end); memory hits do not.
 *
 * @example
 * const ticket = guard.begin(rkey)
 * try {
 *   const bytes = await redis.getBuffer(rkey)
 *   if (guard.mayFill(ticket, () => entryIdentity(bytes))) memory.set(rkey, unpackEntry(bytes))
 * } finally {
 *   guard.end(ticket)
 * }
 */
export class FillGuard {
  /** Per key, only while a read of that key is in flight. */
  readonly #inFlight = new Map<string, KeyState>()
  /** Counts changes to many keys at once (a namespace cleared, memory dropped after an outage). */
  #epoch = 0

  begin(key: string): FillTicket {
    let state = this.#inFlight.get(key)
    if (state === undefined) {
      state = { reads: 0, changes: 0, written: undefined, writtenRun: 0 }
      this.#inFlight.set(key, state)
    }
    state.reads++
    return { key, state, changes: state.changes, epoch: this.#epoch }
  }

  /**
   * True when what the read found may go to memory: nothing changed its key since
   * {@link begin}, or every change since then wrote the entry whose identity `found` gives
   * (called only then).
   */
  mayFill(ticket: FillTicket, found: () => string | undefined): boolean {
    if (ticket.epoch !== this.#epoch) return false
    const state = ticket.state
    const since = state.changes - ticket.changes
    if (since === 0) return true
    return state.written !== undefined && state.writtenRun >= since && found() === state.written
  }

  end(ticket: FillTicket): void {
    if (--ticket.state.reads === 0 && this.#inFlight.get(ticket.key) === ticket.state) {
      this.#inFlight.delete(ticket.key)
    }
  }

  /**
   * `key` was written (`written`: the identity of the entry now stored) or deleted (no identity):
   * reads in flight must not fill memory with anything else.
   */
  changed(key: string, written?: string): void {
    const state = this.#inFlight.get(key)
    if (state === undefined) return
    state.changes++
    if (written !== undefined && written === state.written) state.writtenRun++
    else {
      state.written = written
      state.writtenRun = written === undefined ? 0 : 1
    }
  }

  /** Many keys changed at once: no read in flight may fill memory. */
  changedAll(): void {
    this.#epoch++
  }
}
