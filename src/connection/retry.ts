/**
 * Reconnect delay for attempt `times` (1, 2, ...): exponential from 50 ms, capped at `maxMs`,
 * with "equal jitter" so a fleet of instances does not reconnect in lockstep. Never gives up:
 * the kit must recover by itself when Redis returns.
 */
export function backoff(maxMs: number): (times: number) => number {
  return (times) => {
    const ceiling = Math.min(maxMs, 50 * 2 ** Math.min(times - 1, 16))
    return Math.round(ceiling / 2 + Math.random() * (ceiling / 2))
  }
}
