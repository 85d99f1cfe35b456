/**
 * Circuit breaker in front of module commands. After `threshold` consecutive connection failures
 * it opens: commands fail at once instead of each waiting for the command timeout. After
 * `cooldownMs` one trial command may pass (half-open); a success, or the connection becoming ready
 * again, closes it.
 */
export class CircuitBreaker {
  #failures = 0
  #openedAt = 0
  #trialInFlight = false
  readonly threshold: number
  readonly cooldownMs: number
  readonly #onChange: (state: 'open' | 'closed', failures: number) => void

  constructor(
    threshold: number,
    cooldownMs: number,
    onChange: (state: 'open' | 'closed', failures: number) => void,
  ) {
    this.threshold = threshold
    this.cooldownMs = cooldownMs
    this.#onChange = onChange
  }

  /** `'open'` while commands are refused. */
  get state(): 'open' | 'closed' {
    return this.#openedAt > 0 ? 'open' : 'closed'
  }

  /** Whether a command may go to Redis now. Lets one trial through per cooldown when open. */
  allow(): boolean {
    if (this.#openedAt === 0) return true
    if (this.#trialInFlight || Date.now() - this.#openedAt < this.cooldownMs) return false
    this.#trialInFlight = true
    return true
  }

  success(): void {
    this.#trialInFlight = false
    if (this.#failures === 0 && this.#openedAt === 0) return
    const failures = this.#failures
    this.#failures = 0
    if (this.#openedAt > 0) {
      this.#openedAt = 0
      this.#onChange('closed', failures)
    }
  }

  failure(): void {
    this.#failures++
    if (this.#trialInFlight) {
      this.#trialInFlight = false
      this.#openedAt = Date.now()
      return
    }
    if (this.#openedAt === 0 && this.#failures >= this.threshold) {
      this.#openedAt = Date.now()
      this.#onChange('open', this.#failures)
    }
  }
}
