/** One measured case in one pass. */
export interface Measurement {
  name: string
  pass: number
  opsPerSec: number
  /** CPU microseconds per operation in the process under test. */
  cpuUsPerOp: number
  p50Ms?: number
  p99Ms?: number
  /** Anything the case checked after the run (handler calls, keys), shown under the table. */
  check?: string
}

const fmt = (n: number | undefined, digits = 0) =>
  n === undefined || !Number.isFinite(n) ? '-' : n.toFixed(digits)

/**
 * Prints a Markdown table: per case and pass, ops/s, p50/p99, CPU µs/op, and two ratios against
 * `baseline` measured in the same pass: throughput (ops/s ÷ baseline's) and CPU efficiency
 * (baseline's µs/op ÷ this µs/op). Above 1.00 means better than the baseline.
 */
export function printTable(title: string, rows: Measurement[], baseline: string): void {
  console.log(`\n### ${title}\n`)
  console.log(
    `| case | pass | ops/s | p50 ms | p99 ms | CPU µs/op | × ${baseline} (ops/s) | × ${baseline} (CPU) |`,
  )
  console.log('| --- | --- | --- | --- | --- | --- | --- | --- |')
  for (const row of rows) {
    const base = rows.find((r) => r.name === baseline && r.pass === row.pass)
    const tput = base ? row.opsPerSec / base.opsPerSec : Number.NaN
    const cpu = base ? base.cpuUsPerOp / row.cpuUsPerOp : Number.NaN
    console.log(
      `| ${row.name} | ${row.pass} | ${fmt(row.opsPerSec)} | ${fmt(row.p50Ms, 2)} | ${fmt(row.p99Ms, 2)} | ${fmt(row.cpuUsPerOp, 1)} | ${fmt(tput, 2)} | ${fmt(cpu, 2)} |`,
    )
  }
  const checks = rows.filter((r) => r.check)
  if (checks.length) {
    console.log('\nChecks after each run:')
    for (const r of checks) console.log(`- ${r.name} (pass ${r.pass}): ${r.check}`)
  }
}

/** Runs `cases` twice, the second pass in reverse order, and returns every measurement. */
export async function twoPasses<C extends { name: string }>(
  cases: C[],
  measure: (c: C, pass: number) => Promise<Measurement>,
): Promise<Measurement[]> {
  const rows: Measurement[] = []
  for (const c of cases) rows.push(await measure(c, 1))
  for (const c of [...cases].reverse()) rows.push(await measure(c, 2))
  return rows.sort(
    (a, b) =>
      a.pass - b.pass ||
      cases.findIndex((c) => c.name === a.name) - cases.findIndex((c) => c.name === b.name),
  )
}

const median = (xs: number[]) => {
  const sorted = [...xs].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2
    ? (sorted[mid] as number)
    : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2
}

/**
 * Prints, per case, the median and range over passes (rounds) of its CPU and throughput ratios
 * against `baseline` in the same pass: the summary of a side-by-side run.
 */
export function printMedianRatios(title: string, rows: Measurement[], baseline: string): void {
  console.log(`\n### ${title}\n`)
  console.log(
    `| case | rounds | × ${baseline} (CPU), median | range | × ${baseline} (ops/s), median | range |`,
  )
  console.log('| --- | --- | --- | --- | --- | --- |')
  const names = [...new Set(rows.map((r) => r.name))].filter((n) => n !== baseline)
  for (const name of names) {
    const cpu: number[] = []
    const tput: number[] = []
    for (const row of rows.filter((r) => r.name === name)) {
      const base = rows.find((r) => r.name === baseline && r.pass === row.pass)
      if (!base) continue
      cpu.push(base.cpuUsPerOp / row.cpuUsPerOp)
      tput.push(row.opsPerSec / base.opsPerSec)
    }
    if (cpu.length === 0) continue
    const range = (xs: number[]) => `${fmt(Math.min(...xs), 2)}–${fmt(Math.max(...xs), 2)}`
    console.log(
      `| ${name} | ${cpu.length} | ${fmt(median(cpu), 3)} | ${range(cpu)} | ${fmt(median(tput), 3)} | ${range(tput)} |`,
    )
  }
}
