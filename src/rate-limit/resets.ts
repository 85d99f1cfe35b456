import { Bus } from '../connection/bus.js'
import type { Redkit } from '../kit.js'
import { ResetMarks } from './reset-marks.js'

/** What one policy of this instance remembers of its keys, as a reset reaches it. */
export interface PolicyMemory {
  /** Drops the remembered block and the insurance limiter's counts of `id`. */
  forget(id: string): void
  /** Drops every remembered block (a reset may have been missed). */
  forgetBlocks(): void
}

/** A reset, as one instance tells the others: policy name `n`, normalized key `k`. */
interface ResetMessage {
  i: string
  t: 'reset'
  n: string
  k: string
}

/**
 * Carries a reset to every policy of the same name: those of this instance, whatever options they
 * were looked up with (a `blockDuration` or not, `'1m'` or `60000`), and those of the other
 * instances, over the kit's pub/sub. Without it a block remembered in memory would keep rejecting
 * a key that Redis no longer blocks, until the block ran out.
 *
 * An instance listens from the first block it remembers. Whenever its subscription comes up (late,
 * or after its subscriber reconnected), it may have missed resets, so it forgets every block it
 * remembers: each blocked key then costs one Redis call to be remembered again.
 *
 * A check answered after a reset of its key may report the block the reset lifted: the marks tell
 * it so ({@link tick} before the check, {@link resetSince} after), for that key only.
 */
export class PolicyResets {
  readonly #kit: Redkit
  /**
   * Each policy keeps its own memory, reached here by name, rather than one memory per name:
   * policies of one name share Redis counters only for the limit names they share, so a block one
   * remembers must not reject another's requests, and while Redis is away each counts in its own
   * insurance limiter. Held weakly, so a policy nobody uses any more takes its memory with it.
   */
  readonly #named = new Map<string, Set<WeakRef<PolicyMemory>>>()
  readonly #finalizer = new FinalizationRegistry<{ name: string; ref: WeakRef<PolicyMemory> }>(
    ({ name, ref }) => {
      const set = this.#named.get(name)
      if (set?.delete(ref) && set.size === 0) this.#named.delete(name)
    },
  )
  readonly #bus: Bus<ResetMessage>
  readonly #marks = new ResetMarks()
  #listening = false

  constructor(kit: Redkit) {
    this.#kit = kit
    this.#bus = new Bus<ResetMessage>(
      kit,
      kit.keys.module('ratelimit').key('#bus'),
      'ratelimit-bus',
      (message) => {
        if (message.t === 'reset' && typeof message.n === 'string' && typeof message.k === 'string') {
          this.forget(message.n, message.k)
        }
      },
      () => this.#forgetBlocks(),
    )
  }

  /** Registers a policy's memory under its name, held weakly: a policy nobody uses goes away. */
  add(name: string, memory: PolicyMemory): void {
    const ref = new WeakRef(memory)
    let set = this.#named.get(name)
    if (!set) {
      set = new Set()
      this.#named.set(name, set)
    }
    set.add(ref)
    this.#finalizer.register(memory, { name, ref })
  }

  /** Called when a policy remembers a block: from then on, this instance listens for resets. */
  listen(): void {
    if (this.#listening || this.#kit.hub.closed) return
    this.#listening = true
    // Blocks remembered before the subscription was live may have missed a reset.
    void this.#bus.start().then(() => this.#forgetBlocks())
    this.#kit.hub.onClose(() => this.#bus.stop())
  }

  /** What a check of a key reads before it is sent, to ask {@link resetSince} once answered. */
  get tick(): number {
    return this.#marks.now
  }

  /** Whether `id` may have been reset under `name` after a check that read `since` from {@link tick}. */
  resetSince(name: string, id: string, since: number): boolean {
    return this.#marks.resetSince(`${name}/${id}`, since)
  }

  /** Forgets `id` in every policy of this instance named `name`. */
  forget(name: string, id: string): void {
    // A policy name never contains '/'.
    this.#marks.mark(`${name}/${id}`)
    for (const ref of this.#named.get(name) ?? []) ref.deref()?.forget(id)
  }

  /** Tells the other instances that `id` was reset under `name` (a lost message is reported). */
  publish(name: string, id: string): Promise<void> {
    return this.#bus.publish({ i: this.#bus.id, t: 'reset', n: name, k: id })
  }

  #forgetBlocks(): void {
    this.#marks.markAll()
    for (const set of this.#named.values()) for (const ref of set) ref.deref()?.forgetBlocks()
  }
}
