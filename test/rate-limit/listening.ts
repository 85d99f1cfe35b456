import type { Redkit } from '../../src/index.js'

/**
 * Makes a fresh `kit` listen for rate-limit resets, as an instance does from the first block it
 * remembers, and waits (up to 2 s) until it does: the block it remembered for that is forgotten
 * then, since what an instance remembered before it listened, it asks Redis about again.
 */
export async function listenForResets(kit: Redkit): Promise<void> {
  const warmUp = { name: 'warm-up', limits: [{ points: 1, duration: '1m' }] }
  await kit.rateLimits.block('warm-up', { ...warmUp, duration: '1m' })
  const deadline = Date.now() + 2000
  while ((await kit.rateLimits.get('warm-up', warmUp)).source === 'block-cache' && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 10))
  }
}
