/**
 * `npm run bench [group...]`: runs every `bench/<group>.bench.ts` (or the named ones). Each group
 * runs its cases side by side, twice (second pass reversed), and prints ratios against baselines
 * measured in the same run. This process (load generator) and Redis are pinned to core 1; servers
 * under test to core 0.
 */
import { readdirSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { CONNECTIONS, canPin, DURATION_S, pin, WARMUP_S } from './lib/env.js'

const here = dirname(fileURLToPath(import.meta.url))
const wanted = process.argv.slice(2)
const groups = readdirSync(here)
  .filter((f) => f.endsWith('.bench.ts'))
  .map((f) => f.replace(/\.bench\.ts$/, ''))
  .filter((g) => wanted.length === 0 || wanted.includes(g))
if (groups.length === 0) {
  console.error(`No bench group matches ${wanted.join(', ')}.`)
  process.exit(1)
}
pin(process.pid, 1)
console.log(
  `redkit bench: groups ${groups.join(', ')}; warm-up ${WARMUP_S}s, measure ${DURATION_S}s, ${CONNECTIONS} connections; ` +
    (canPin() ? 'server on core 0, load + Redis on core 1' : 'taskset unavailable: processes not pinned'),
)
for (const group of groups) {
  const mod = (await import(pathToFileURL(join(here, `${group}.bench.ts`)).href)) as {
    default: () => Promise<void>
  }
  await mod.default()
}
process.exit(0)
