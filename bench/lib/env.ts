import { execFileSync } from 'node:child_process'

/** Seconds of measurement per case (`BENCH_DURATION`, default 10). */
export const DURATION_S = Number(process.env.BENCH_DURATION ?? 10)
/** Seconds of warm-up per case (`BENCH_WARMUP`, default 3). */
export const WARMUP_S = Number(process.env.BENCH_WARMUP ?? 3)
/** Concurrent connections / workers (`BENCH_CONNECTIONS`, default 50). */
export const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 50)

let tasksetChecked: boolean | undefined
/** True when `taskset` exists and the machine has at least two cores to split. */
export function canPin(): boolean {
  if (tasksetChecked === undefined) {
    try {
      execFileSync('taskset', ['-p', String(process.pid)], { stdio: 'ignore' })
      tasksetChecked = true
    } catch {
      tasksetChecked = false
    }
  }
  return tasksetChecked
}

/** Pins a running process to one core (no-op without taskset). */
export function pin(pid: number | undefined, core: number): void {
  if (!pid || !canPin()) return
  try {
    execFileSync('taskset', ['-cp', String(core), String(pid)], { stdio: 'ignore' })
  } catch {
    // best effort: an unpinned run is still a side-by-side run
  }
}

/** Rounds of a side-by-side measurement (`BENCH_ROUNDS`, default 5). */
export const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5)
