import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Each file starts its own redis-server processes; two files at a time keeps a 2-core machine responsive.
    maxWorkers: 2,
    // Generous: Sentinel elections on a loaded 2-core machine can take several seconds more than usual.
    testTimeout: 60_000,
    hookTimeout: 60_000,
    globalSetup: ['test/helpers/global-setup.ts'],
  },
})
